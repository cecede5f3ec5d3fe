"""The one check vocabulary: the same functions score teacher samples, serve as RL rewards and grade evals.

A check is deterministic: `check.evaluate(input, response, label=None) -> CheckResult(passed, reason)`; only
the checks that compare with a reference answer (`label_match`, a `python` function that takes it) use
`label`. A check of a mechanical rule may also offer `repair(input, response) -> str | None`, a
deterministic fix (lowercase, drop commas, cut at a sentence end, add a prefix, ...). Repairs are only ever
applied to teacher samples while building data, and the repaired text is checked again; evals score
answers raw.

Checks are written in YAML as `{kind: max_words, n: 30}`; each kind is a pydantic model, so an unknown kind
or a wrong parameter is reported with the file, line and field. Besides the kinds below, every IFEval
instruction is a kind under its IFEval id with IFEval's parameters (`data_tools/ifeval.py`), e.g.
`{kind: "length_constraints:number_words", relation: less than, num_words: 50}`. The short kinds that name
an IFEval rule (`max_words`, `min_words`, `max_sentences`, `no_commas`) count words and split sentences exactly
as IFEval does, with its functions, and fail a blank answer as it does: one counter for every check.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import re
import string
import unicodedata
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, PositiveInt, field_validator

from data_tools.check_base import BaseCheck, CheckResult, extract_json_object, fail, ok
from data_tools.ifeval import IFEVAL_CHECKS, IFEvalCheck, NoComma, count_words, cut_below, split_sentences


def _valid_regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as e:
        raise ValueError(f"not a valid regular expression: {e}") from None
    return value


class MaxWords(IFEvalCheck):
    """At most `n` words, counted as IFEval counts them (runs of word characters: "don't" is two words, "--" none):
    IFEval's `length_constraints:number_words` with relation "less than" n + 1, blank answers failing as there.
    Repair: keep whole sentences while they fit, else whole tokens."""

    kind: Literal["max_words"]
    n: PositiveInt

    def judge(self, input, response):
        words = count_words(response)
        return ok(f"{words} words") if words <= self.n else fail(f"{words} words > {self.n}")

    def repair(self, input, response):
        return cut_below(response, self.n + 1)


class MinWords(IFEvalCheck):
    """At least `n` words (IFEval's count, as `max_words`): `length_constraints:number_words` "at least" n."""

    kind: Literal["min_words"]
    n: PositiveInt

    def judge(self, input, response):
        words = count_words(response)
        return ok(f"{words} words") if words >= self.n else fail(f"{words} words < {self.n}")


class MaxSentences(IFEvalCheck):
    """At most `n` sentences, split as IFEval splits them (nltk's Punkt English model: "e.g." and "Dr." end
    none): `length_constraints:number_sentences` "less than" n + 1. Repair: keep the first n."""

    kind: Literal["max_sentences"]
    n: PositiveInt

    def judge(self, input, response):
        count = len(split_sentences(response))
        return ok(f"{count} sentences") if count <= self.n else fail(f"{count} sentences > {self.n}")

    def repair(self, input, response):
        return " ".join(split_sentences(response)[: self.n])


class Lowercase(BaseCheck):
    """No uppercase letters at all (unlike IFEval's change_case:english_lowercase, a text with no letters
    passes). Repair: lowercase everything."""

    kind: Literal["lowercase"]

    def evaluate(self, input, response, label=None):
        upper = [c for c in response if c.isupper()]
        return ok() if not upper else fail(f"{len(upper)} uppercase letters, first {upper[0]!r}")

    def repair(self, input, response):
        return response.lower()


class NoCommas(NoComma):
    """No commas: IFEval's `punctuation:no_comma` under its short name. Repair: delete them."""

    kind: Literal["no_commas"]


class StartsWith(BaseCheck):
    """The response starts with `prefix` (after leading whitespace). Repair: prepend it."""

    kind: Literal["starts_with"]
    prefix: str = Field(min_length=1)

    def evaluate(self, input, response, label=None):
        head = response.lstrip()[: len(self.prefix)]
        return ok() if head == self.prefix else fail(f"starts with {head!r}, not {self.prefix!r}")

    def repair(self, input, response):
        return f"{self.prefix} {response.lstrip()}"


class EndsWith(BaseCheck):
    """The response ends with `suffix`, case-sensitively (IFEval's startend:end_checker ignores case and a
    closing quote). Repair: append it."""

    kind: Literal["ends_with"]
    suffix: str = Field(min_length=1)

    def evaluate(self, input, response, label=None):
        tail = response.rstrip()[-len(self.suffix):]
        return ok() if tail == self.suffix else fail(f"ends with {tail!r}, not {self.suffix!r}")

    def repair(self, input, response):
        return f"{response.rstrip()} {self.suffix}"


class Contains(BaseCheck):
    """Every phrase in `phrases` appears (case-insensitive)."""

    kind: Literal["contains"]
    phrases: list[str] = Field(min_length=1)

    def evaluate(self, input, response, label=None):
        missing = [p for p in self.phrases if p.lower() not in response.lower()]
        return ok() if not missing else fail(f"missing {missing}")


class NotContains(BaseCheck):
    """No phrase in `phrases` appears, even inside a word (case-insensitive; IFEval's
    keywords:forbidden_words matches whole words only)."""

    kind: Literal["not_contains"]
    phrases: list[str] = Field(min_length=1)

    def evaluate(self, input, response, label=None):
        found = [p for p in self.phrases if p.lower() in response.lower()]
        return ok() if not found else fail(f"contains {found}")


class Regex(BaseCheck):
    """`pattern` must (or, with `must_match: false`, must not) be found in the response."""

    kind: Literal["regex"]
    pattern: str
    must_match: bool = True

    _compiles = field_validator("pattern")(_valid_regex)

    def evaluate(self, input, response, label=None):
        found = re.search(self.pattern, response) is not None
        if found == self.must_match:
            return ok()
        return fail(f"pattern {self.pattern!r} {'not found' if self.must_match else 'found'}")


class JsonFormat(BaseCheck):
    """The whole response is one JSON value (``` fences allowed; as IFEval's detectable_format:json_format).
    Repair: extract the outermost {...} object when it parses."""

    kind: Literal["json_format"]

    @staticmethod
    def _strip_fences(text: str) -> str:
        text = text.strip()
        if text.startswith("```"):
            text = re.sub(r"^```[a-zA-Z]*\s*|\s*```$", "", text)
        return text

    def evaluate(self, input, response, label=None):
        try:
            json.loads(self._strip_fences(response))
        except json.JSONDecodeError as e:
            return fail(f"not JSON: {e.msg} at column {e.colno}")
        return ok()

    def repair(self, input, response):
        return extract_json_object(response)


class Grounding(BaseCheck):
    """Every value matching `pattern` in the response must also occur in the input: the model may repeat
    names, numbers or phone numbers it was given but never invent them (case-insensitive)."""

    kind: Literal["grounding"]
    pattern: str

    _compiles = field_validator("pattern")(_valid_regex)

    def evaluate(self, input, response, label=None):
        invented = sorted({m.group(0) for m in re.finditer(self.pattern, response)
                           if m.group(0).lower() not in input.lower()})
        return ok() if not invented else fail(f"not in the input: {invented}")


class OnTopic(BaseCheck):
    """The answer is about the input: the cosine similarity of the two texts' sentence embeddings
    (all-MiniLM-L6-v2, `data_tools/similarity.py`) is at least `min_similarity`. It reads meaning, not shared words:
    "use warm water and a gentle detergent" answers "How do I wash a wool sweater?" (0.51), a fixed "yes." does not
    (0.02). `ignore`: phrases removed from the response (case-insensitive) before it is compared, such as a prefix
    every answer carries, which would otherwise pull every answer towards the same meaning.

    0.35, the default, was chosen on hand-labelled demo answers and agrees with the labels on 224 of the 230 that
    were not used to choose it (word overlap: 201); tests/fixtures/on_topic_labels.jsonl holds the labels and
    `scripts/on_topic_agreement.py` measures a threshold on them. No repair: a topic cannot be fixed mechanically."""

    kind: Literal["on_topic"]
    min_similarity: float = Field(0.35, gt=0, lt=1)
    ignore: list[str] = []

    def evaluate(self, input, response, label=None):
        from data_tools.similarity import similarity  # torch loads with the first answer scored, not with a spec

        text = response
        for phrase in self.ignore:
            text = re.sub(re.escape(phrase), " ", text, flags=re.IGNORECASE)
        if not text.strip():
            return fail("the answer is empty" + (" once the ignored phrases are removed" if self.ignore else ""))
        sim = similarity(input, text.strip())
        if sim >= self.min_similarity:
            return ok(f"similarity {sim:.2f} to the input")
        return fail(f"far in meaning from the input: similarity {sim:.2f} < {self.min_similarity}")


def normalise_label(text: str) -> str:
    """Unicode NFKC, case-folded, whitespace collapsed, punctuation stripped from both ends:
    '  "Positive." ' and 'positive' normalise to the same string."""
    collapsed = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    return collapsed.strip(string.punctuation + string.whitespace)


class LabelMatch(BaseCheck):
    """The response equals the reference label passed to `evaluate` (classification, extraction, short QA).
    `exact`: equal after stripping surrounding whitespace; `normalised`: equal after `normalise_label`."""

    kind: Literal["label_match"]
    mode: Literal["exact", "normalised"] = "exact"

    @property
    def uses_label(self) -> bool:
        return True

    def evaluate(self, input, response, label=None):
        if label is None:
            return fail("no label")
        norm = str.strip if self.mode == "exact" else normalise_label
        if norm(response) == norm(label):
            return ok(f"matches label {label!r}")
        return fail(f"{response.strip()[:60]!r} != label {label!r} ({self.mode})")


@cache
def load_function(spec: str) -> tuple[Callable, bool]:
    """Import `package.module:function_name` (importlib only, nothing is eval'd) -> (function, whether it takes
    the label as a third argument); ValueError naming the function when it cannot be used."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"function {spec!r}: expected 'package.module:function_name'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"function {spec!r}: cannot import module {module_name!r} ({e})") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"function {spec!r}: module {module_name!r} has no function {attr!r}")
    takes_label = _accepts(fn, 3)
    if not (takes_label or _accepts(fn, 2)):
        raise ValueError(f"function {spec!r}: must accept (input, response) or (input, response, label)")
    return fn, takes_label


def function_sources(functions: Iterable[str]) -> dict[str, str]:
    """Module name -> sha256 (16 hex digits) of its source file, for the module of each `package.module:function`
    check function and the modules beside it that it imports from (faq_checks builds on content_checks): what a
    python check decides can change while the spec's YAML stays the same, and a resumed bake must see that."""
    sources = {}
    for name in functions:
        module = importlib.import_module(name.partition(":")[0])
        if getattr(module, "__file__", None) is None:
            continue
        folder = Path(module.__file__).parent
        related = {module} | {obj if inspect.ismodule(obj) else inspect.getmodule(obj) for obj in vars(module).values()
                              if inspect.ismodule(obj) or inspect.isfunction(obj) or inspect.isclass(obj)}
        for m in related - {None}:
            path = getattr(m, "__file__", None)
            if path is not None and Path(path).parent == folder:
                sources[m.__name__] = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    return dict(sorted(sources.items()))


def _accepts(fn: Callable, n_args: int) -> bool:
    try:
        inspect.signature(fn).bind(*range(n_args))
    except TypeError:
        return False
    except ValueError:  # a builtin without a signature: assume (input, response)
        return n_args == 2
    return True


class Python(BaseCheck):
    """A user function `package.module:function_name`, called as `fn(input, response)` or, when it takes a
    third argument, `fn(input, response, label)`; it returns a bool or a (bool, reason) pair. The function is
    imported when the spec is loaded, so a typo fails then, naming it, not in the middle of a build."""

    kind: Literal["python"]
    function: str

    @property
    def uses_label(self) -> bool:
        return load_function(self.function)[1]

    @field_validator("function")
    @classmethod
    def _importable(cls, value: str) -> str:
        load_function(value)
        return value

    def evaluate(self, input, response, label=None):
        fn, takes_label = load_function(self.function)
        out = fn(input, response, label) if takes_label else fn(input, response)
        if isinstance(out, bool):
            return CheckResult(out, f"{self.function} -> {out}")
        if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], bool):
            return CheckResult(out[0], str(out[1]))
        raise TypeError(f"check function {self.function} returned {out!r}; expected a bool or (bool, reason)")


Check = Annotated[
    MaxWords | MinWords | MaxSentences | Lowercase | NoCommas | StartsWith | EndsWith | Contains | NotContains
    | Regex | JsonFormat | Grounding | OnTopic | LabelMatch | Python | IFEVAL_CHECKS,
    Field(discriminator="kind"),
]
