"""The one check vocabulary: the same functions score teacher samples, serve as RL rewards and grade evals.

A check is deterministic: `check.evaluate(input, response) -> CheckResult(passed, reason)`. A check of a
mechanical rule may also offer `repair(input, response) -> str | None`, a deterministic fix (lowercase,
drop commas, cut at a sentence end, add a prefix, ...). Repairs are only ever applied to teacher samples
while building data, and the repaired text is checked again; evals score answers raw.

Checks are written in YAML as `{kind: max_words, n: 30}`; each kind is a pydantic model, so an unknown kind
or a wrong parameter is reported with the file, line and field.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Literal, NamedTuple

from pydantic import Field, PositiveInt, field_validator

from promptbake.config import StrictModel


class CheckResult(NamedTuple):
    passed: bool
    reason: str


def _ok(reason: str = "ok") -> CheckResult:
    return CheckResult(True, reason)


def _fail(reason: str) -> CheckResult:
    return CheckResult(False, reason)


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def split_sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


def count_words(text: str) -> int:
    return len(text.split())


def _valid_regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as e:
        raise ValueError(f"not a valid regular expression: {e}") from None
    return value


class BaseCheck(StrictModel):
    def evaluate(self, input: str, response: str) -> CheckResult:
        raise NotImplementedError

    def repair(self, input: str, response: str) -> str | None:
        """A deterministic fix for a failing response, or None when this rule has no mechanical fix."""
        return None


class MaxWords(BaseCheck):
    """At most `n` whitespace-separated words. Repair: keep whole sentences while they fit, else cut at n."""

    kind: Literal["max_words"]
    n: PositiveInt

    def evaluate(self, input, response):
        words = count_words(response)
        return _ok(f"{words} words") if words <= self.n else _fail(f"{words} words > {self.n}")

    def repair(self, input, response):
        kept: list[str] = []
        for sentence in split_sentences(response):
            if count_words(" ".join(kept + [sentence])) > self.n:
                break
            kept.append(sentence)
        return " ".join(kept) if kept else " ".join(response.split()[: self.n])


class MinWords(BaseCheck):
    """At least `n` words."""

    kind: Literal["min_words"]
    n: PositiveInt

    def evaluate(self, input, response):
        words = count_words(response)
        return _ok(f"{words} words") if words >= self.n else _fail(f"{words} words < {self.n}")


class MaxSentences(BaseCheck):
    """At most `n` sentences (split after . ! ?). Repair: keep the first n."""

    kind: Literal["max_sentences"]
    n: PositiveInt

    def evaluate(self, input, response):
        count = len(split_sentences(response))
        return _ok(f"{count} sentences") if count <= self.n else _fail(f"{count} sentences > {self.n}")

    def repair(self, input, response):
        return " ".join(split_sentences(response)[: self.n])


class Lowercase(BaseCheck):
    """No uppercase letters at all (IFEval change_case:english_lowercase). Repair: lowercase everything."""

    kind: Literal["lowercase"]

    def evaluate(self, input, response):
        upper = [c for c in response if c.isupper()]
        return _ok() if not upper else _fail(f"{len(upper)} uppercase letters, first {upper[0]!r}")

    def repair(self, input, response):
        return response.lower()


class NoCommas(BaseCheck):
    """No commas (IFEval punctuation:no_comma). Repair: delete them."""

    kind: Literal["no_commas"]

    def evaluate(self, input, response):
        count = response.count(",")
        return _ok() if count == 0 else _fail(f"{count} commas")

    def repair(self, input, response):
        return response.replace(",", "")


class StartsWith(BaseCheck):
    """The response starts with `prefix` (after leading whitespace). Repair: prepend it."""

    kind: Literal["starts_with"]
    prefix: str = Field(min_length=1)

    def evaluate(self, input, response):
        head = response.lstrip()[: len(self.prefix)]
        return _ok() if head == self.prefix else _fail(f"starts with {head!r}, not {self.prefix!r}")

    def repair(self, input, response):
        return f"{self.prefix} {response.lstrip()}"


class EndsWith(BaseCheck):
    """The response ends with `suffix` (IFEval startend:end_checker). Repair: append it."""

    kind: Literal["ends_with"]
    suffix: str = Field(min_length=1)

    def evaluate(self, input, response):
        tail = response.rstrip()[-len(self.suffix):]
        return _ok() if tail == self.suffix else _fail(f"ends with {tail!r}, not {self.suffix!r}")

    def repair(self, input, response):
        return f"{response.rstrip()} {self.suffix}"


class Contains(BaseCheck):
    """Every phrase in `phrases` appears (case-insensitive)."""

    kind: Literal["contains"]
    phrases: list[str] = Field(min_length=1)

    def evaluate(self, input, response):
        missing = [p for p in self.phrases if p.lower() not in response.lower()]
        return _ok() if not missing else _fail(f"missing {missing}")


class NotContains(BaseCheck):
    """No phrase in `phrases` appears (case-insensitive; IFEval keywords:forbidden_words)."""

    kind: Literal["not_contains"]
    phrases: list[str] = Field(min_length=1)

    def evaluate(self, input, response):
        found = [p for p in self.phrases if p.lower() in response.lower()]
        return _ok() if not found else _fail(f"contains {found}")


class Regex(BaseCheck):
    """`pattern` must (or, with `must_match: false`, must not) be found in the response."""

    kind: Literal["regex"]
    pattern: str
    must_match: bool = True

    _compiles = field_validator("pattern")(_valid_regex)

    def evaluate(self, input, response):
        found = re.search(self.pattern, response) is not None
        if found == self.must_match:
            return _ok()
        return _fail(f"pattern {self.pattern!r} {'not found' if self.must_match else 'found'}")


class JsonFormat(BaseCheck):
    """The whole response is one JSON value (IFEval detectable_format:json_format; ``` fences allowed).
    Repair: extract the outermost {...} object when it parses."""

    kind: Literal["json_format"]

    @staticmethod
    def _strip_fences(text: str) -> str:
        text = text.strip()
        if text.startswith("```"):
            text = re.sub(r"^```[a-zA-Z]*\s*|\s*```$", "", text)
        return text

    def evaluate(self, input, response):
        try:
            json.loads(self._strip_fences(response))
        except json.JSONDecodeError as e:
            return _fail(f"not JSON: {e.msg} at column {e.colno}")
        return _ok()

    def repair(self, input, response):
        start, end = response.find("{"), response.rfind("}")
        if start < 0 or end <= start:
            return None
        candidate = response[start : end + 1]
        try:
            json.loads(candidate)
        except json.JSONDecodeError:
            return None
        return candidate


class Grounding(BaseCheck):
    """Every value matching `pattern` in the response must also occur in the input: the model may repeat
    names, numbers or phone numbers it was given but never invent them (case-insensitive)."""

    kind: Literal["grounding"]
    pattern: str

    _compiles = field_validator("pattern")(_valid_regex)

    def evaluate(self, input, response):
        invented = sorted({m.group(0) for m in re.finditer(self.pattern, response)
                           if m.group(0).lower() not in input.lower()})
        return _ok() if not invented else _fail(f"not in the input: {invented}")


Check = Annotated[
    MaxWords | MinWords | MaxSentences | Lowercase | NoCommas | StartsWith | EndsWith | Contains | NotContains
    | Regex | JsonFormat | Grounding,
    Field(discriminator="kind"),
]
