"""Input sources (a JSONL/CSV/text file or a template over slot values) and the seeded split by input."""

from __future__ import annotations

import csv
import hashlib
import itertools
import random
from pathlib import Path

from data_tools.spec import PromptSpec
from promptbake.config import InputError
from promptbake.io import iter_jsonl


def input_id(text: str) -> str:
    """A stable id from the input's text: journals and splits survive reordering of the source."""
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _read_file(path: Path, field: str, label_field: str | None) -> list[tuple[str, str | None]]:
    """(input, label) pairs from a JSONL, CSV or text file; errors name the line and field."""
    suffix = path.suffix.lower()
    items: list[tuple[str, str | None]] = []
    if suffix in (".jsonl", ".json"):
        for lineno, obj in iter_jsonl(path):
            value = obj.get(field)
            if not isinstance(value, str) or not value.strip():
                raise InputError(f"{path}:{lineno}: field {field!r} is missing or not a non-empty string")
            label = obj.get(label_field) if label_field else None
            if label_field and not isinstance(label, str):
                raise InputError(f"{path}:{lineno}: label field {label_field!r} is missing or not a string")
            items.append((value, label))
    elif suffix == ".csv":
        try:
            with open(path, encoding="utf-8", newline="") as f:
                reader = csv.DictReader(f)
                header = reader.fieldnames or []
                for column in (field, label_field):
                    if column and column not in header:
                        raise InputError(f"{path}:1: no column {column!r} in the header {header}")
                for row in reader:
                    value = row.get(field)
                    if not value or not value.strip():
                        raise InputError(f"{path}:{reader.line_num}: column {field!r} is empty or missing")
                    label = row.get(label_field) if label_field else None
                    if label_field and label is None:
                        raise InputError(f"{path}:{reader.line_num}: column {label_field!r} is missing")
                    items.append((value, label))
        except UnicodeDecodeError as e:
            raise InputError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    else:
        if label_field:
            raise InputError(f"{path}: a plain text file has no columns; `label_field` needs JSONL or CSV")
        try:
            items = [(line, None) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError as e:
            raise InputError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    return items


def load_inputs(spec: PromptSpec) -> dict[str, str | None]:
    """All inputs of the spec (input text -> reference label or None), de-duplicated in first-seen order,
    optionally cut to `inputs.limit`."""
    src = spec.inputs
    if src.path is not None:
        items = _read_file(spec.inputs_path(), src.field, src.label_field)
        where = str(spec.inputs_path())
    else:
        names = list(src.slots)
        items = [(src.template.format(**dict(zip(names, combo))), None)
                 for combo in itertools.product(*(src.slots[n] for n in names))]
        where = f"{spec.source}: field 'inputs.template'"
    inputs: dict[str, str | None] = {}
    for text, label in items:
        inputs.setdefault(text.strip(), label)
    if not inputs:
        raise InputError(f"{where}: no inputs (the file is empty)")
    if src.limit is not None and src.limit < len(inputs):
        keep = set(random.Random(spec.split.seed).sample(list(inputs), src.limit))
        inputs = {t: label for t, label in inputs.items() if t in keep}
    return inputs


def split_inputs(texts: list[str], eval_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Seeded split by input: each input is on exactly one side; at least one input on each side."""
    if len(texts) < 2:
        raise InputError(f"need at least 2 distinct inputs to split into train and eval, got {len(texts)}")
    order = sorted(texts, key=input_id)  # independent of source order
    random.Random(seed).shuffle(order)
    n_eval = min(max(1, round(len(order) * eval_fraction)), len(order) - 1)
    return order[n_eval:], order[:n_eval]
