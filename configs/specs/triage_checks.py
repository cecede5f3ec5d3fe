"""Checks for the ticket-triage spec (`ticket_triage.yaml`). The answer is one JSON object:

    {"category": "billing" | "shipping" | "technical" | "account" | "returns", "urgent": true | false,
     "summary": "at most 15 words"}

Each check parses the answer on its own (a ``` fence around it is tolerated, as our ticket router strips one),
so an answer that is not JSON fails every rule here with the same reason. The right category for an input is
its `label` (what our support leads chose when they triaged the ticket by hand).
"""

from __future__ import annotations

import json
import re

CATEGORIES = ("billing", "shipping", "technical", "account", "returns")
KEYS = {"category", "urgent", "summary"}
MAX_SUMMARY_WORDS = 15


def parse_ticket(response: str) -> tuple[dict | None, str]:
    """(the object, "ok") or (None, why the answer is not a JSON object)."""
    text = re.sub(r"^```[A-Za-z]*\s*|\s*```$", "", response.strip())
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        return None, f"not JSON: {e.msg} at column {e.colno}"
    if not isinstance(obj, dict):
        return None, f"a JSON {type(obj).__name__}, not an object"
    return obj, "ok"


def has_fields(input: str, response: str) -> tuple[bool, str]:
    """Exactly the keys category, urgent and summary; urgent a JSON boolean, category and summary strings."""
    obj, reason = parse_ticket(response)
    if obj is None:
        return False, reason
    if set(obj) != KEYS:
        return False, f"keys {sorted(obj)}, expected {sorted(KEYS)}"
    if not isinstance(obj["urgent"], bool):
        return False, f"urgent is {obj['urgent']!r}, not true/false"
    if not isinstance(obj["category"], str) or not isinstance(obj["summary"], str):
        return False, "category and summary must be strings"
    return True, "ok"


def category_in_enum(input: str, response: str) -> tuple[bool, str]:
    """The category is one of the five, written exactly (lowercase)."""
    obj, reason = parse_ticket(response)
    if obj is None:
        return False, reason
    category = obj.get("category")
    if category not in CATEGORIES:
        return False, f"category {category!r} is not one of {list(CATEGORIES)}"
    return True, category


def right_category(input: str, response: str, label: str | None) -> tuple[bool, str]:
    """The category is the one our support leads gave the ticket (the input's `label`)."""
    if label is None:
        return False, "no label"
    obj, reason = parse_ticket(response)
    if obj is None:
        return False, reason
    category = obj.get("category")
    if category != label:
        return False, f"category {category!r}, expected {label!r}"
    return True, f"category {label!r}"


def short_summary(input: str, response: str) -> tuple[bool, str]:
    """A non-empty summary of at most 15 words."""
    obj, reason = parse_ticket(response)
    if obj is None:
        return False, reason
    summary = obj.get("summary")
    if not isinstance(summary, str) or not summary.strip():
        return False, "no summary"
    words = len(summary.split())
    if words > MAX_SUMMARY_WORDS:
        return False, f"summary has {words} words > {MAX_SUMMARY_WORDS}"
    return True, f"summary has {words} words"
