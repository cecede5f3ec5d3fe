"""What every check shares: the result type and the base class. Kept apart from `checks.py` so that the check
modules (`checks.py`, `ifeval.py`) can both build on it without importing each other in a circle."""

from __future__ import annotations

import json
from typing import NamedTuple

from promptbake.core.config import StrictModel


class CheckResult(NamedTuple):
    passed: bool
    reason: str


def ok(reason: str = "ok") -> CheckResult:
    return CheckResult(True, reason)


def fail(reason: str) -> CheckResult:
    return CheckResult(False, reason)


class BaseCheck(StrictModel):
    def evaluate(self, input: str, response: str, label: str | None = None) -> CheckResult:
        """Judge `response` to `input`. `label` is a reference answer, used only by checks that compare to one
        (label_match, python functions that take it); every other check ignores it."""
        raise NotImplementedError

    def repair(self, input: str, response: str) -> str | None:
        """A deterministic fix for a failing response, or None when this rule has no mechanical fix."""
        return None

    @property
    def uses_label(self) -> bool:
        """Whether the check compares with the reference label. Such a check cannot choose between answers at
        inference time (no label there): the inference-time arms select with the other checks only."""
        return False


def extract_json_object(text: str) -> str | None:
    """The outermost {...} of `text` when it parses as JSON, else None (the repair of the JSON kinds)."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    candidate = text[start : end + 1]
    try:
        json.loads(candidate)
    except json.JSONDecodeError:
        return None
    return candidate
