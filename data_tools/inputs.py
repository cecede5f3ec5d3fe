"""Input sources (a JSONL/CSV/text file or a template over slot values) and the seeded split by input."""

from __future__ import annotations

import csv
import hashlib
import itertools
import random
from dataclasses import dataclass
from pathlib import Path

from data_tools.spec import PromptSpec
from promptbake.config import InputError
from promptbake.io import iter_jsonl


def input_id(text: str) -> str:
    """A stable id from the input's text: journals and splits survive reordering of the source."""
    return hashlib.sha1(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class InputItem:
    label: str | None = None
    """Reference answer from the input's label column."""
    logged: str | None = None
    """The answer a prompted model gave in production (`chat_logs` inputs)."""


def _read_rows(path: Path, field: str, label_field: str | None) -> list[tuple[str, InputItem]]:
    """Inputs (and labels) from a JSONL, CSV, text file or a saved `datasets` directory; errors name the line."""
    suffix = path.suffix.lower()
    items: list[tuple[str, InputItem]] = []

    def add(where: str, value, label) -> None:
        if not isinstance(value, str) or not value.strip():
            raise InputError(f"{where}: field {field!r} is missing or not a non-empty string")
        if label_field and not isinstance(label, str):
            raise InputError(f"{where}: label field {label_field!r} is missing or not a string")
        items.append((value, InputItem(label=label if label_field else None)))

    if path.is_dir():
        from datasets import load_from_disk

        try:
            data = load_from_disk(str(path))
        except (FileNotFoundError, ValueError) as e:
            raise InputError(f"{path}: not a dataset saved with save_to_disk ({e})") from None
        if hasattr(data, "keys"):  # a DatasetDict: use its train split
            if "train" not in data:
                raise InputError(f"{path}: a DatasetDict without a 'train' split ({list(data)})")
            data = data["train"]
        for column in (field, label_field):
            if column and column not in data.column_names:
                raise InputError(f"{path}: no column {column!r} in {data.column_names}")
        for i, row in enumerate(data):
            add(f"{path}[{i}]", row[field], row.get(label_field) if label_field else None)
    elif suffix in (".jsonl", ".json"):
        for lineno, obj in iter_jsonl(path):
            add(f"{path}:{lineno}", obj.get(field), obj.get(label_field) if label_field else None)
    elif suffix == ".csv":
        try:
            with open(path, encoding="utf-8", newline="") as f:
                reader = csv.DictReader(f)
                header = reader.fieldnames or []
                for column in (field, label_field):
                    if column and column not in header:
                        raise InputError(f"{path}:1: no column {column!r} in the header {header}")
                for row in reader:
                    add(f"{path}:{reader.line_num}", row.get(field), row.get(label_field) if label_field else None)
        except UnicodeDecodeError as e:
            raise InputError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    else:
        if label_field:
            raise InputError(f"{path}: a plain text file has no columns; `label_field` needs JSONL or CSV")
        try:
            items = [(line, InputItem()) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError as e:
            raise InputError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    return items


def _read_chat_logs(path: Path, system_prompts: list[str]) -> list[tuple[str, InputItem]]:
    """OpenAI-format logs: the last user turn is the input, the assistant answer after it a sample; the system
    prompt is dropped (it is what we bake in). Logs under other system prompts are skipped when asked."""
    items = []
    for lineno, obj in iter_jsonl(path):
        messages = obj.get("messages")
        if not isinstance(messages, list) or not all(isinstance(m, dict) and isinstance(m.get("content"), str)
                                                     and m.get("role") in ("system", "user", "assistant")
                                                     for m in messages):
            raise InputError(f"{path}:{lineno}: field 'messages' must be a list of "
                             "{'role': system|user|assistant, 'content': str}")
        roles = [m["role"] for m in messages]
        if roles[-2:] != ["user", "assistant"]:
            raise InputError(f"{path}:{lineno}: a log must end with a user turn and the assistant's answer")
        system = next((m["content"] for m in messages if m["role"] == "system"), None)
        if system_prompts and system not in system_prompts:
            continue
        items.append((messages[-2]["content"], InputItem(logged=messages[-1]["content"])))
    return items


def _expand_template(spec: PromptSpec) -> list[tuple[str, InputItem]]:
    src = spec.inputs
    names = list(src.slots)
    rng = random.Random(spec.split.seed)
    texts = []
    for combo in itertools.product(*(src.slots[n] for n in names)):
        values = dict(zip(names, combo))
        for slot, variant in src.missing.items():  # missing-field variants, seeded
            if rng.random() < variant.fraction:
                values[slot] = variant.text
        texts.append((src.template.format(**values), InputItem()))
    return texts


def load_inputs(spec: PromptSpec) -> dict[str, InputItem]:
    """All inputs of the spec (input text -> label / logged answer), de-duplicated in first-seen order,
    optionally cut to `inputs.limit`."""
    src = spec.inputs
    if src.path is None:
        items, where = _expand_template(spec), f"{spec.source}: field 'inputs.template'"
    elif src.format == "chat_logs":
        items, where = _read_chat_logs(spec.inputs_path(), src.system_prompts), str(spec.inputs_path())
    else:
        items, where = _read_rows(spec.inputs_path(), src.field, src.label_field), str(spec.inputs_path())
    inputs: dict[str, InputItem] = {}
    for text, item in items:
        inputs.setdefault(" ".join(text.split()) if src.path is None else text.strip(), item)
    if not inputs:
        raise InputError(f"{where}: no inputs (the file is empty"
                         f"{' or no log carries one of the allowed system prompts' if src.system_prompts else ''})")
    if src.limit is not None and src.limit < len(inputs):
        keep = set(random.Random(spec.split.seed).sample(list(inputs), src.limit))
        inputs = {t: item for t, item in inputs.items() if t in keep}
    return inputs


def split_inputs(texts: list[str], eval_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Seeded split by input: each input is on exactly one side; at least one input on each side."""
    if len(texts) < 2:
        raise InputError(f"need at least 2 distinct inputs to split into train and eval, got {len(texts)}")
    order = sorted(texts, key=input_id)  # independent of source order
    random.Random(seed).shuffle(order)
    n_eval = min(max(1, round(len(order) * eval_fraction)), len(order) - 1)
    return order[n_eval:], order[:n_eval]
