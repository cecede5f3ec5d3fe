"""Content check for the contact-extraction spec (`csv_extraction.yaml`): the answer's three CSV fields are the
label's, field by field. The spec's grounding checks only prove that a value was copied from the message, so a
company's name in the name field passes them, and so does a line of empty fields (`,,`) for every message; this
check compares each field with the expected line in the `label` column, e.g. `Maria Lopez,719-555-0142,ORD-48213`
or `,,ORD-33120`, and names the fields that differ. Case and runs of spaces inside a field do not count; an
empty field must be empty where the label's is, and filled where the label's is filled.

    check: {kind: python, function: "csv_checks:fields_match_label"}
"""

from __future__ import annotations

FIELDS = ("name", "phone", "order_id")


def _fields(line: str) -> list[str] | None:
    """The three fields of one `name,phone,order_id` line, spacing collapsed and case-folded; None when the text
    is not one line of exactly three comma-separated fields."""
    line = line.strip()
    if "\n" in line:
        return None
    parts = line.split(",")
    if len(parts) != len(FIELDS):
        return None
    return [" ".join(part.split()).casefold() for part in parts]


def fields_match_label(input: str, response: str, label: str | None) -> tuple[bool, str]:
    """Every field of the answer equals the label's field (up to case and spacing)."""
    if label is None:
        return False, "no label"
    expected = _fields(label)
    if expected is None:
        return False, f"the label {label!r} is not one line name,phone,order_id"
    got = _fields(response)
    if got is None:
        return False, "not one line of three comma-separated fields"
    wrong = [f"{name} {g!r} (label {e!r})" for name, g, e in zip(FIELDS, got, expected) if g != e]
    if wrong:
        return False, "; ".join(wrong)
    return True, "every field matches the label"
