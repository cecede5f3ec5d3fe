"""The general questions of the drift arm, and how a short answer to one is read.

The general-questions file holds one JSON object per line:

    {"id": "fact-01", "kind": "fact", "question": "What is the capital of France?", "answer": "Paris"}
    {"id": "fact-14", "kind": "fact", "question": "...", "answer": "carbon dioxide", "aliases": ["CO2"]}
    {"id": "arithmetic-01", "kind": "arithmetic", "question": "What is 12 times 3?", "answer": "36"}
    {"id": "howto-01", "kind": "howto", "question": "How do I boil an egg?"}
    {"id": "writing-01", "kind": "writing", "question": "Write a haiku about rain."}

`answer` (with optional `aliases`) is required for fact and arithmetic questions, where it must be short (an
arithmetic answer is a number that the question does not contain) and absent from how-to and writing ones.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from promptbake.core.config import FieldError, StrictModel

GENERAL_QUESTIONS = Path(__file__).resolve().parents[1] / "configs" / "evals" / "general_questions.jsonl"
SHORT_KINDS = ("fact", "arithmetic")


class GeneralQuestion(StrictModel):
    """One line of the general-questions file."""

    id: str = Field(min_length=1)
    kind: Literal["fact", "howto", "arithmetic", "writing"]
    question: str = Field(min_length=1)
    answer: str | None = Field(None, min_length=1, max_length=60)
    """The expected short answer (fact, arithmetic); other kinds have none."""
    aliases: list[str] = []
    """Other accepted spellings of `answer` ("CO2" for "carbon dioxide")."""

    @model_validator(mode="after")
    def _answer_fits_kind(self):
        problem = None
        if self.kind in SHORT_KINDS and self.answer is None:
            problem = f"a {self.kind} question needs a short expected answer"
        elif self.kind not in SHORT_KINDS and (self.answer is not None or self.aliases):
            problem = (f"a {self.kind} question has no expected answer: remove 'answer' and 'aliases' (or make it "
                       f"a {' or '.join(SHORT_KINDS)} question)")
        elif self.kind == "arithmetic" and number(self.answer) is None:
            problem = f"an arithmetic answer must be a number, got {self.answer!r}"
        elif self.kind == "arithmetic" and number(self.answer) in numbers(self.question):
            # an answer is looked for among the numbers that the question does not contain (see `named`)
            problem = "the arithmetic answer also appears in the question, so it cannot be told from an echo"
        if problem:
            raise FieldError([(("answer",), problem)])
        return self


# ---------------------------------------------------------------- short answers

NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
# words that carry no answer: left out when two wrong fact answers are compared by what they name
STOPWORDS = set("""a an the is are was were be been it its this that these those of in on at to for from by with
as and or but not no yes so if then than there here which what who whom whose when where why how do does did
can could would should will shall may might must i you he she we they me him her us them my your his our their
about also just very really called known named sure certainly course answer quick well one""".split())


def words(text: str) -> list[str]:
    """Case-folded words and numbers, number words as digits ("Eight" -> "8"), "1,000" as "1000"."""
    tokens = re.findall(r"\d+(?:[.,]\d+)*(?![^\W_])|[^\W_]+", unicodedata.normalize("NFKC", text).casefold())
    return [NUMBER_WORDS.get(t) or number(t) or t for t in tokens]


def number(token: str | None) -> str | None:
    """A canonical decimal string for a number token ("1,000" -> "1000", "2.50" -> "2.5"), else None."""
    if token is None or not re.fullmatch(r"-?\d+(?:[.,]\d+)*", token.strip()):
        return None
    value = float(token.strip().replace(",", ""))
    return str(int(value)) if value.is_integer() else repr(value)


def numbers(text: str) -> list[str]:
    return [w for w in words(text) if number(w) is not None]


def named(question: GeneralQuestion, text: str) -> set[str]:
    """What an answer names beyond the question: its numbers that the question does not contain (arithmetic),
    or its words that are neither in the question nor stopwords (fact)."""
    if question.kind == "arithmetic":
        return set(numbers(text)) - set(numbers(question.question))
    return set(words(text)) - set(words(question.question)) - STOPWORDS


def is_correct(question: GeneralQuestion, text: str) -> bool:
    """Does the answer give the expected short answer anywhere? Arithmetic: among the numbers the question does
    not contain, so that an answer echoing the question ("12 times 3 is 36") or working it out ("10 x 3 = 30
    and 2 x 3 = 6, so 36") counts; fact: the answer or an alias as whole words (case and the number words up to
    twenty ignored: "eight" is "8")."""
    if question.kind == "arithmetic":
        return number(question.answer) in named(question, text)
    said = f" {' '.join(words(text))} "
    return any(f" {' '.join(words(expected))} " in said for expected in [question.answer, *question.aliases])


def agrees(question: GeneralQuestion, tuned: str, base: str) -> bool:
    """Do the two answers give the same short answer? Both right; or both wrong and naming something in common
    (see `named`: the same wrong number, the same wrong city), or both naming nothing. One right and one wrong
    disagree."""
    right = is_correct(question, tuned), is_correct(question, base)
    if right[0] or right[1]:
        return right[0] and right[1]
    said = named(question, tuned), named(question, base)
    return bool(said[0] & said[1]) or not (said[0] or said[1])
