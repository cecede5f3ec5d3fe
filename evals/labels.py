"""Label match: does an answer agree with the input's reference label, field by field."""

from __future__ import annotations

import json

from data_tools.check_base import extract_json_object
from data_tools.checks import normalise_label


def label_matches(answer: str, label: str | dict) -> dict[str, bool]:
    """Field -> whether the answer agrees with the label on it. A dict label (several label columns), or a
    label that is itself a JSON object, is matched field by field against the answer's JSON object (a field
    the answer lacks, or an answer with no JSON, does not match); a plain string label is one field, `label`,
    compared whole after normalisation. Matching a whole JSON answer as a string would count a reordered key
    or an extra space as wrong."""
    expected = label if isinstance(label, dict) else None
    if expected is None:
        found = extract_json_object(label)
        expected = json.loads(found) if found is not None and isinstance(json.loads(found), dict) else None
    if expected is None:
        return {"label": normalise_label(answer) == normalise_label(label)}
    found = extract_json_object(answer)
    got = json.loads(found) if found is not None else None
    got = got if isinstance(got, dict) else {}
    return {k: k in got and same_value(got[k], v) for k, v in expected.items()}


def same_value(got, expected) -> bool:
    if isinstance(expected, str) and isinstance(got, str):
        return normalise_label(got) == normalise_label(expected)
    return got == expected
