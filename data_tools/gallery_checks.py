"""`python` checks for the tool-call spec of the gallery (`configs/specs/tool_call.yaml`), used as

    check: {kind: python, function: "data_tools.gallery_checks:valid_tool_call"}

A tool call is `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` and nothing else. `TOOLS` mirrors the
tools that the spec's system prompt offers (tests/test_gallery.py keeps the two in step): a check function
takes no parameters, so the tool schema lives here.
"""

from __future__ import annotations

import json
import re

from data_tools.checks import normalise_label

# tool name -> {argument: JSON type}; every argument is required and no other is allowed
TOOLS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "get_weather": {"city": str},
    "get_order_status": {"order_id": str},
    "convert_currency": {"amount": (int, float), "from_currency": str, "to_currency": str},
    "set_timer": {"minutes": (int, float)},
    "search_products": {"query": str},
}
_ENVELOPE = re.compile(r"\s*<tool_call>(.*)</tool_call>\s*", re.DOTALL)


def parse_tool_call(response: str) -> tuple[dict | None, str]:
    """(the call, "ok") or (None, why it is not a well-formed call of a known tool)."""
    m = _ENVELOPE.fullmatch(response)
    if m is None:
        return None, "not exactly one <tool_call>...</tool_call> envelope"
    try:
        call = json.loads(m.group(1))
    except json.JSONDecodeError as e:
        return None, f"the envelope does not hold JSON: {e.msg} at column {e.colno}"
    if not isinstance(call, dict) or set(call) != {"name", "arguments"} or not isinstance(call["arguments"], dict):
        return None, 'expected {"name": ..., "arguments": {...}} and nothing more'
    schema = TOOLS.get(call["name"]) if isinstance(call["name"], str) else None
    if schema is None:
        return None, f"unknown tool {call['name']!r}; allowed: {sorted(TOOLS)}"
    args = call["arguments"]
    if set(args) != set(schema):
        return None, f"{call['name']} takes {sorted(schema)}, got {sorted(args)}"
    # bool is an int subclass in Python, but true/false is not a number in a tool's schema
    wrong = [k for k, t in schema.items() if not isinstance(args[k], t) or isinstance(args[k], bool)]
    if wrong:
        return None, f"wrong argument type for {wrong}"
    return call, "ok"


def valid_tool_call(input: str, response: str) -> tuple[bool, str]:
    """A well-formed call of an allowed tool with exactly its arguments, of the right types."""
    call, reason = parse_tool_call(response)
    return call is not None, reason if call is None else f"calls {call['name']}"


def tool_call_matches_label(input: str, response: str, label: str | None) -> tuple[bool, str]:
    """The same call as the reference `label`: same tool, numbers equal, strings equal after
    `normalise_label` (case, spacing and surrounding punctuation do not count)."""
    if label is None:
        return False, "no label"
    expected, reason = parse_tool_call(label)
    if expected is None:
        return False, f"the label is not a valid call: {reason}"
    call, reason = parse_tool_call(response)
    if call is None:
        return False, reason
    if call["name"] != expected["name"]:
        return False, f"calls {call['name']}, label calls {expected['name']}"
    for key, want in expected["arguments"].items():
        got = call["arguments"][key]
        same = normalise_label(got) == normalise_label(want) if isinstance(want, str) else got == want
        if not same:
            return False, f"{key}={got!r}, label has {want!r}"
    return True, f"matches the label's {expected['name']} call"
