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


def _read_file(path: Path, field: str) -> list[str]:
    suffix = path.suffix.lower()
    texts: list[str] = []
    if suffix in (".jsonl", ".json"):
        for lineno, obj in iter_jsonl(path):
            value = obj.get(field)
            if not isinstance(value, str) or not value.strip():
                raise InputError(f"{path}:{lineno}: field {field!r} is missing or not a non-empty string")
            texts.append(value)
    elif suffix == ".csv":
        try:
            with open(path, encoding="utf-8", newline="") as f:
                reader = csv.DictReader(f)
                if reader.fieldnames is None or field not in reader.fieldnames:
                    raise InputError(f"{path}:1: no column {field!r} in the header {reader.fieldnames}")
                for row in reader:
                    value = row.get(field)
                    if not value or not value.strip():
                        raise InputError(f"{path}:{reader.line_num}: column {field!r} is empty or missing")
                    texts.append(value)
        except UnicodeDecodeError as e:
            raise InputError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    else:
        try:
            texts = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError as e:
            raise InputError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    return texts


def load_inputs(spec: PromptSpec) -> list[str]:
    """All inputs of the spec, de-duplicated in first-seen order, optionally cut to `inputs.limit`."""
    src = spec.inputs
    if src.path is not None:
        texts = _read_file(spec.inputs_path(), src.field)
        where = str(spec.inputs_path())
    else:
        names = list(src.slots)
        texts = [src.template.format(**dict(zip(names, combo)))
                 for combo in itertools.product(*(src.slots[n] for n in names))]
        where = f"{spec.source}: field 'inputs.template'"
    texts = list(dict.fromkeys(t.strip() for t in texts))
    if not texts:
        raise InputError(f"{where}: no inputs (the file is empty)")
    if src.limit is not None and src.limit < len(texts):
        texts = random.Random(spec.split.seed).sample(texts, src.limit)
    return texts


def split_inputs(texts: list[str], eval_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Seeded split by input: each input is on exactly one side; at least one input on each side."""
    if len(texts) < 2:
        raise InputError(f"need at least 2 distinct inputs to split into train and eval, got {len(texts)}")
    order = sorted(texts, key=input_id)  # independent of source order
    random.Random(seed).shuffle(order)
    n_eval = min(max(1, round(len(order) * eval_fraction)), len(order) - 1)
    return order[n_eval:], order[:n_eval]
