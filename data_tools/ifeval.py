r"""IFEval's verifiable instructions as checks: `kind` is the IFEval instruction id verbatim, the parameters
are those of IFEval's `build_description` (google-research `instruction_following_eval/instructions.py`,
vendored by lm-eval as `lm_eval/tasks/ifeval`), misspellings included (`section_spliter`). A row of IFEval's
data ports over as one check per instruction: `{kind: <id>, **kwargs}` with the null kwargs left out.

`evaluate` follows IFEval's strict `check_following` (`scoring.score_loose` gives the loose mode), and words
are counted exactly as IFEval does (nltk's `RegexpTokenizer(r"\w+")` is `re.findall(r"\w+")`). Where
IFEval leans on nltk models or langdetect, which promptbake does not ship, this module differs:

- sentences: IFEval uses nltk's trained punkt model; here a rule splitter (after . ! ? and whitespace,
  except after a title such as "Dr." or "e.g." or a single initial). They agree on ordinary prose and can
  differ on abbreviations punkt learned from its corpus.
- `change_case:capital_word_frequency`: IFEval tokenizes with `nltk.word_tokenize`; here a word is a run of
  `\w` joined by hyphens: hyphenated words count once and "DON'T" twice, as in nltk ("DO" + "N'T"); other
  clitics and odd punctuation can differ.
- `change_case:english_lowercase` / `english_capital` check only the case; IFEval also asks langdetect
  whether the text is English. `language:response_language` is left out: no honest pure-Python stand-in.
- keywords, `section_spliter` and a custom `postscript_marker` are literal text here; IFEval passes them to
  `re` unescaped, which gives the same result for plain words.

Repairs exist where a deterministic edit makes the rule hold without inventing content (case, commas, end
phrase, quotes, JSON extraction, cutting to a length, repeating the request); the caller re-checks them.
"""

from __future__ import annotations

import collections
import json
import re
from typing import Literal

from pydantic import Field, NonNegativeInt, PositiveInt, model_validator

from data_tools.check_base import BaseCheck, CheckResult, extract_json_object, fail, ok

Relation = Literal["less than", "at least"]
"""IFEval's two comparisons: 'less than' is count < threshold, 'at least' is count >= threshold."""


def _compare(count: int, relation: Relation, threshold: int, what: str) -> CheckResult:
    passed = count < threshold if relation == "less than" else count >= threshold
    return CheckResult(passed, f"{count} {what}, want {relation} {threshold}")


def _exactly(count: int, wanted: int, what: str) -> CheckResult:
    return ok(f"{count} {what}") if count == wanted else fail(f"{count} {what}, want exactly {wanted}")


def count_words(text: str) -> int:
    """IFEval's word count: runs of word characters (nltk RegexpTokenizer(r"\\w+"))."""
    return len(re.findall(r"\w+", text))


_BOUNDARY = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*\s+")
_TITLES = {"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "e.g", "i.e", "capt", "lt"}


def split_sentences(text: str) -> list[str]:
    """Sentences end at . ! ? followed by whitespace, except after a title ("Dr.") or a single initial."""
    text = text.strip()
    sentences, start = [], 0
    for m in _BOUNDARY.finditer(text):
        words = text[start : m.start()].split()
        last = words[-1].lower().lstrip("(\"'") if words else ""
        if m.group().startswith(".") and (last in _TITLES or (len(last) == 1 and last.isalpha())):
            continue
        sentences.append(text[start : m.end()].strip())
        start = m.end()
    if text[start:].strip():
        sentences.append(text[start:].strip())
    return sentences


def _cut_below(text: str, limit: int) -> str | None:
    """`text` cut so that it has fewer than `limit` words: whole sentences while they fit, else whole tokens."""
    kept: list[str] = []
    for sentence in split_sentences(text):
        if count_words(" ".join(kept + [sentence])) >= limit:
            break
        kept.append(sentence)
    if not kept:
        for token in text.split():
            if count_words(" ".join(kept + [token])) >= limit:
                break
            kept.append(token)
    return " ".join(kept) or None


# --- keywords ---------------------------------------------------------------------------------------------


class KeywordExistence(BaseCheck):
    """Every keyword appears (case-insensitive, also inside longer words)."""

    kind: Literal["keywords:existence"]
    keywords: list[str] = Field(min_length=1)

    def evaluate(self, input, response, label=None):
        missing = [k for k in self.keywords if not re.search(re.escape(k), response, flags=re.IGNORECASE)]
        return fail(f"missing keywords {missing}") if missing else ok()


class ForbiddenWords(BaseCheck):
    """No forbidden word appears as a whole word (case-insensitive)."""

    kind: Literal["keywords:forbidden_words"]
    forbidden_words: list[str] = Field(min_length=1)

    def evaluate(self, input, response, label=None):
        found = [w for w in self.forbidden_words
                 if re.search(rf"\b{re.escape(w)}\b", response, flags=re.IGNORECASE)]
        return fail(f"contains forbidden words {found}") if found else ok()


class KeywordFrequency(BaseCheck):
    """`keyword` occurs `relation` `frequency` times (case-insensitive substring count, as IFEval)."""

    kind: Literal["keywords:frequency"]
    keyword: str = Field(min_length=1)
    frequency: NonNegativeInt
    relation: Relation

    def evaluate(self, input, response, label=None):
        count = len(re.findall(re.escape(self.keyword.strip()), response, flags=re.IGNORECASE))
        return _compare(count, self.relation, self.frequency, f"times {self.keyword.strip()!r}")


class LetterFrequency(BaseCheck):
    """The letter occurs `let_relation` `let_frequency` times (case-insensitive)."""

    kind: Literal["keywords:letter_frequency"]
    letter: str = Field(pattern=r"^[A-Za-z]$")
    let_frequency: NonNegativeInt
    let_relation: Relation

    def evaluate(self, input, response, label=None):
        count = collections.Counter(response.lower())[self.letter.lower()]
        return _compare(count, self.let_relation, self.let_frequency, f"letters {self.letter.lower()!r}")


# --- length constraints -----------------------------------------------------------------------------------


class NumberWords(BaseCheck):
    """`relation` `num_words` words. Repair ('less than'): keep whole sentences while they fit."""

    kind: Literal["length_constraints:number_words"]
    num_words: NonNegativeInt
    relation: Relation

    def evaluate(self, input, response, label=None):
        return _compare(count_words(response), self.relation, self.num_words, "words")

    def repair(self, input, response):
        return _cut_below(response, self.num_words) if self.relation == "less than" else None


class NumberSentences(BaseCheck):
    """`relation` `num_sentences` sentences. Repair ('less than'): keep the first num_sentences - 1."""

    kind: Literal["length_constraints:number_sentences"]
    num_sentences: NonNegativeInt
    relation: Relation

    def evaluate(self, input, response, label=None):
        return _compare(len(split_sentences(response)), self.relation, self.num_sentences, "sentences")

    def repair(self, input, response):
        if self.relation != "less than" or self.num_sentences < 2:
            return None
        return " ".join(split_sentences(response)[: self.num_sentences - 1])


class NumberParagraphs(BaseCheck):
    """Exactly `num_paragraphs` paragraphs separated by the markdown divider ***; an empty paragraph between
    two dividers fails (an empty one at either end is not counted)."""

    kind: Literal["length_constraints:number_paragraphs"]
    num_paragraphs: NonNegativeInt

    def evaluate(self, input, response, label=None):
        parts = re.split(r"\s?\*\*\*\s?", response)
        if any(not p.strip() for p in parts[1:-1]):
            return fail("empty paragraph between *** dividers")
        return _exactly(sum(1 for p in parts if p.strip()), self.num_paragraphs, "paragraphs")


class NthParagraphFirstWord(BaseCheck):
    """Exactly `num_paragraphs` paragraphs separated by blank lines (\\n\\n), and paragraph `nth_paragraph`
    (from 1) starts with `first_word` (case-insensitive, leading quotes and trailing punctuation ignored)."""

    kind: Literal["length_constraints:nth_paragraph_first_word"]
    num_paragraphs: PositiveInt
    nth_paragraph: PositiveInt
    first_word: str = Field(min_length=1)

    @model_validator(mode="after")
    def _nth_within(self):
        if self.nth_paragraph > self.num_paragraphs:
            raise ValueError(f"nth_paragraph {self.nth_paragraph} > num_paragraphs {self.num_paragraphs}")
        return self

    def evaluate(self, input, response, label=None):
        # IFEval counts the non-empty paragraphs but indexes the raw split, empty ones included: kept as is
        parts = response.split("\n\n")
        count = sum(1 for p in parts if p.strip())
        if self.nth_paragraph > count or not parts[self.nth_paragraph - 1].strip():
            return fail(f"{count} paragraphs, no paragraph {self.nth_paragraph}")
        word = parts[self.nth_paragraph - 1].split()[0].lstrip("'").lstrip('"')
        word = re.split(r"[.,?!'\"]", word, maxsplit=1)[0].lower()
        if count != self.num_paragraphs:
            return fail(f"{count} paragraphs, want {self.num_paragraphs}")
        if word != self.first_word.lower():
            return fail(f"paragraph {self.nth_paragraph} starts with {word!r}, not {self.first_word.lower()!r}")
        return ok()


# --- detectable content and format ------------------------------------------------------------------------


class NumberPlaceholders(BaseCheck):
    """At least `num_placeholders` placeholders in square brackets, like [address]."""

    kind: Literal["detectable_content:number_placeholders"]
    num_placeholders: NonNegativeInt

    def evaluate(self, input, response, label=None):
        return _compare(len(re.findall(r"\[.*?\]", response)), "at least", self.num_placeholders, "placeholders")


class Postscript(BaseCheck):
    """A postscript starting with `postscript_marker` ("P.S." also matches "p. s.", "P.P.S" also "p.p.s").
    No repair: a marker with nothing after it would satisfy the check and not the instruction."""

    kind: Literal["detectable_content:postscript"]
    postscript_marker: str = Field(min_length=1)

    def evaluate(self, input, response, label=None):
        marker = self.postscript_marker.strip()
        pattern = {"P.P.S": r"\s*p\.\s?p\.\s?s.*$", "P.S.": r"\s*p\.\s?s\..*$"}.get(
            marker, r"\s*" + re.escape(marker.lower()) + r".*$")
        found = re.search(pattern, response.lower(), flags=re.MULTILINE)
        return ok() if found else fail(f"no postscript starting with {marker!r}")


class NumberBulletLists(BaseCheck):
    """Exactly `num_bullets` markdown bullet points (lines starting with * or -)."""

    kind: Literal["detectable_format:number_bullet_lists"]
    num_bullets: NonNegativeInt

    def evaluate(self, input, response, label=None):
        count = (len(re.findall(r"^\s*\*[^\*].*$", response, flags=re.MULTILINE))
                 + len(re.findall(r"^\s*-.*$", response, flags=re.MULTILINE)))
        return _exactly(count, self.num_bullets, "bullet points")


class ConstrainedResponse(BaseCheck):
    """The response contains one of IFEval's fixed options: 'My answer is yes.' / 'no.' / 'maybe.'"""

    kind: Literal["detectable_format:constrained_response"]

    def evaluate(self, input, response, label=None):
        options = ("My answer is yes.", "My answer is no.", "My answer is maybe.")
        return ok() if any(o in response.strip() for o in options) else fail(f"none of {list(options)}")


class NumberHighlightedSections(BaseCheck):
    """At least `num_highlights` non-empty markdown highlights, *like this* (each **bold** also counts)."""

    kind: Literal["detectable_format:number_highlighted_sections"]
    num_highlights: NonNegativeInt

    def evaluate(self, input, response, label=None):
        single = [h for h in re.findall(r"\*[^\n\*]*\*", response) if h.strip("*").strip()]
        double = [h for h in re.findall(r"\*\*[^\n\*]*\*\*", response) if h[2:-2].strip()]
        return _compare(len(single) + len(double), "at least", self.num_highlights, "highlighted sections")


class MultipleSections(BaseCheck):
    """At least `num_sections` sections, each opened by `section_spliter` and a number ("SECTION 1")."""

    kind: Literal["detectable_format:multiple_sections"]
    section_spliter: str = Field(min_length=1)
    num_sections: NonNegativeInt

    def evaluate(self, input, response, label=None):
        pattern = r"\s?" + re.escape(self.section_spliter.strip()) + r"\s?\d+\s?"
        count = len(re.split(pattern, response)) - 1
        return _compare(count, "at least", self.num_sections, f"{self.section_spliter.strip()} sections")


class IFEvalJsonFormat(BaseCheck):
    """The whole response is JSON, optionally in a ``` / ```json fence. Repair: extract the outermost {...}."""

    kind: Literal["detectable_format:json_format"]

    def evaluate(self, input, response, label=None):
        text = response.strip()
        for fence in ("```json", "```Json", "```JSON", "```"):
            text = text.removeprefix(fence)
        try:
            json.loads(text.removesuffix("```").strip())
        except ValueError as e:
            return fail(f"not JSON: {e}")
        return ok()

    def repair(self, input, response):
        return extract_json_object(response)


class Title(BaseCheck):
    """A non-empty title in double angular brackets, like <<poem of joy>>."""

    kind: Literal["detectable_format:title"]

    def evaluate(self, input, response, label=None):
        titles = [t for t in re.findall(r"<<[^\n]+>>", response) if t.lstrip("<").rstrip(">").strip()]
        return ok(f"title {titles[0]}") if titles else fail("no <<title>>")


# --- combination, start/end, case, punctuation ------------------------------------------------------------


class TwoResponses(BaseCheck):
    """Two different responses separated by ******, and nothing empty between separators."""

    kind: Literal["combination:two_responses"]

    def evaluate(self, input, response, label=None):
        parts = response.split("******")
        if any(not p.strip() for p in parts[1:-1]):
            return fail("empty response between ****** separators")
        answers = [p.strip() for p in parts if p.strip()]
        if len(answers) != 2:
            return fail(f"{len(answers)} responses separated by ******, want 2")
        return ok() if answers[0] != answers[1] else fail("the two responses are identical")


class RepeatPrompt(BaseCheck):
    """The response starts by repeating the request word for word (case-insensitive). `prompt_to_repeat`
    defaults to the input, which is the request in a spec. Repair: put the request in front."""

    kind: Literal["combination:repeat_prompt"]
    prompt_to_repeat: str | None = Field(default=None, min_length=1)

    def _prompt(self, input: str) -> str:
        return (self.prompt_to_repeat if self.prompt_to_repeat is not None else input).strip()

    def evaluate(self, input, response, label=None):
        prompt = self._prompt(input)
        if response.strip().lower().startswith(prompt.lower()):
            return ok()
        return fail(f"does not start by repeating {prompt[:60]!r}")

    def repair(self, input, response):
        return f"{self._prompt(input)}\n\n{response.strip()}"


class EndChecker(BaseCheck):
    """The response ends with `end_phrase` (case-insensitive; a closing double quote is ignored).
    Repair: append the phrase."""

    kind: Literal["startend:end_checker"]
    end_phrase: str = Field(min_length=1)

    def evaluate(self, input, response, label=None):
        tail = response.strip().strip('"').lower()
        phrase = self.end_phrase.strip().lower()
        return ok() if tail.endswith(phrase) else fail(f"ends with {tail[-len(phrase):]!r}, not {phrase!r}")

    def repair(self, input, response):
        return f"{response.rstrip()} {self.end_phrase.strip()}"


class Quotation(BaseCheck):
    """The whole response is wrapped in double quotes. Repair: wrap it."""

    kind: Literal["startend:quotation"]

    def evaluate(self, input, response, label=None):
        text = response.strip()
        return ok() if len(text) > 1 and text[0] == text[-1] == '"' else fail("not wrapped in double quotes")

    def repair(self, input, response):
        return f'"{response.strip()}"'


class EnglishLowercase(BaseCheck):
    """All cased letters lowercase, and at least one (str.islower). Repair: lowercase everything."""

    kind: Literal["change_case:english_lowercase"]

    def evaluate(self, input, response, label=None):
        return ok() if response.islower() else fail("not all lowercase (or no letters)")

    def repair(self, input, response):
        return response.lower()


class EnglishCapital(BaseCheck):
    """All cased letters uppercase, and at least one (str.isupper). Repair: uppercase everything."""

    kind: Literal["change_case:english_capital"]

    def evaluate(self, input, response, label=None):
        return ok() if response.isupper() else fail("not all capital letters (or no letters)")

    def repair(self, input, response):
        return response.upper()


class CapitalWordFrequency(BaseCheck):
    """Words in all capitals occur `capital_relation` `capital_frequency` times."""

    kind: Literal["change_case:capital_word_frequency"]
    capital_frequency: NonNegativeInt
    capital_relation: Relation

    def evaluate(self, input, response, label=None):
        count = sum(1 for w in re.findall(r"\w+(?:-\w+)*", response) if w.isupper())
        return _compare(count, self.capital_relation, self.capital_frequency, "all-capital words")


class NoComma(BaseCheck):
    """No commas at all. Repair: delete them."""

    kind: Literal["punctuation:no_comma"]

    def evaluate(self, input, response, label=None):
        count = response.count(",")
        return ok() if count == 0 else fail(f"{count} commas")

    def repair(self, input, response):
        return response.replace(",", "")


# the kinds that checks.py adds to its `Check` union
IFEVAL_CHECKS = (
    KeywordExistence | ForbiddenWords | KeywordFrequency | LetterFrequency
    | NumberWords | NumberSentences | NumberParagraphs | NthParagraphFirstWord
    | NumberPlaceholders | Postscript
    | NumberBulletLists | ConstrainedResponse | NumberHighlightedSections | MultipleSections | IFEvalJsonFormat | Title
    | TwoResponses | RepeatPrompt | EndChecker | Quotation
    | EnglishLowercase | EnglishCapital | CapitalWordFrequency | NoComma
)
