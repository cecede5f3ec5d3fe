"""Label repair: a teacher answer that is wrong only where the label says what is right gets the label's values
in those fields (`teacher.label_repair`), and is kept if it then passes every check.

Why: a small teacher often writes a well-formed JSON answer (the right keys, a fitting summary) with a labelled
field wrong, a ticket's category. Every check but the label-reading ones passes it, yet the build would reject
the input or, with `teacher.label_fallback`, train on the bare label, which for a JSON answer is no answer at
all. Setting the labelled fields keeps everything else the teacher wrote. The build tries it after the checks'
own repairs and before the label as the answer, and counts such rows as `label_repaired` in the provenance.
"""

from __future__ import annotations

import json

from data_tools.check_base import extract_json_object
from data_tools.scoring import all_pass, score
from data_tools.spec import Rule

# json.dumps settings a teacher's object may be written in: the default, compact, indented
_STYLES = ({}, {"separators": (",", ":")}, {"indent": 2})


def label_fields(label: str | dict | None, key: str | None = None) -> dict | None:
    """The answer's JSON fields that `label` gives: a dict label (`inputs.label_fields`) by its own names; a plain
    label under `key` (`inputs.label_json_key`) only, since which field a bare "billing" belongs to is otherwise a
    guess; a label that is itself a JSON object (a reference tool call), by its keys. None when it gives none."""
    if isinstance(label, dict):
        return label
    if not isinstance(label, str):
        return None
    if key is not None:
        return {key: label}
    found = extract_json_object(label)
    obj = json.loads(found) if found is not None else None
    return obj if isinstance(obj, dict) else None


def dumps_like(text: str, obj: dict) -> str:
    """`obj` written as the JSON object `text` is written, where one of json's usual styles reproduces `text`
    exactly; json.dumps' default otherwise. Key order is the object's own."""
    original = json.loads(text)
    for style in _STYLES:
        if json.dumps(original, ensure_ascii=False, **style) == text:
            return json.dumps(obj, ensure_ascii=False, **style)
    return json.dumps(obj, ensure_ascii=False)


def label_repair(rules: list[Rule], input: str, response: str, label: str | dict | None,
                 key: str | None = None) -> str | None:
    """`response` with the label's fields set in its JSON object, or None where that is not sound or not enough.

    Only when every failing check reads the label (`check.uses_label`): a format or content failure elsewhere is
    the teacher's and stays a failure. The object is the response's outermost {...} (the whole answer, or inside
    an envelope such as ```json fences or <tool_call>...</tool_call>, which is kept as written); an existing key
    keeps its place, a missing one is added at the end. When the label would set every key (a tool call whose
    label is the whole call), nothing of the teacher's is left: that is the label as the answer, not a repair.
    The result is re-checked with every check, the label-reading ones included.
    """
    fields = label_fields(label, key)
    if not fields:
        return None
    results = score(rules, input, response, label)
    failed = [r.check for r in rules if r.check is not None and not results[r.id].passed]
    if not failed or not all(check.uses_label for check in failed):
        return None
    start, end = response.find("{"), response.rfind("}")
    if start < 0 or end < start:
        return None
    try:
        obj = json.loads(response[start:end + 1])
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or set(obj) <= set(fields):
        return None
    repaired = response[:start] + dumps_like(response[start:end + 1], obj | fields) + response[end + 1:]
    return repaired if all_pass(score(rules, input, repaired, label)) else None
