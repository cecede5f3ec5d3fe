"""Input sources (a JSONL/CSV/text file or a template over slot values) and the seeded split by input."""

from __future__ import annotations

import csv
import hashlib
import itertools
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

from data_tools.spec import PromptSpec
from promptbake.core.config import InputError
from promptbake.core.io import iter_jsonl

log = logging.getLogger(__name__)


def input_id(text: str) -> str:
    """A stable id from the input's text: journals and splits survive reordering of the source."""
    return hashlib.sha1(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class InputItem:
    label: str | dict | None = None
    """Reference answer from the input's label column (a dict of columns with `label_fields`)."""
    logged: str | None = None
    """The answer a prompted model gave in production (`chat_logs` inputs)."""
    synthesized: bool = False
    """Written by the teacher (data_tools/synthesize.py); its label, if any, is the teacher's guess."""
    line: int | None = field(default=None, compare=False)
    """Where the input stands in its file (line number; row index for a saved dataset), for messages."""


def _read_rows(path: Path, field: str, label_field: str | None, label_fields: list[str] = ()
               ) -> list[tuple[str, InputItem]]:
    """Inputs (and labels) from a JSONL, CSV, text file or a saved `datasets` directory; errors name the line.
    With `label_fields` the label is a dict of those columns (JSON values as they are), else the string in
    `label_field`."""
    suffix = path.suffix.lower()
    items: list[tuple[str, InputItem]] = []
    columns = list(label_fields) or ([label_field] if label_field else [])

    def add(where: str, line: int, value, row) -> None:
        if not isinstance(value, str) or not value.strip():
            raise InputError(f"{where}: field {field!r} is missing or not a non-empty string")
        for column in columns:
            got = row.get(column)
            if got is None or (label_field and not isinstance(got, str)):
                raise InputError(f"{where}: label field {column!r} is missing"
                                 f"{' or not a string' if label_field else ''}")
        label = {c: row[c] for c in label_fields} if label_fields else row.get(label_field) if label_field else None
        items.append((value, InputItem(label=label, line=line)))

    def require(header: list[str], where: str, what: str = "") -> None:
        for column in (field, *columns):
            if column not in header:
                raise InputError(f"{where}: no column {column!r} in {what}{header}")

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
        require(data.column_names, str(path))
        for i, row in enumerate(data):
            add(f"{path}[{i}]", i, row[field], row)
    elif suffix in (".jsonl", ".json"):
        for lineno, obj in iter_jsonl(path):
            add(f"{path}:{lineno}", lineno, obj.get(field), obj)
    elif suffix == ".csv":
        try:
            with open(path, encoding="utf-8", newline="") as f:
                reader = csv.DictReader(f)
                require(reader.fieldnames or [], f"{path}:1", "the header ")
                for row in reader:
                    add(f"{path}:{reader.line_num}", reader.line_num, row.get(field), row)
        except UnicodeDecodeError as e:
            raise InputError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    else:
        if columns:
            raise InputError(f"{path}: a plain text file has no columns; labels need JSONL or CSV")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
            items = [(line, InputItem(line=n)) for n, line in enumerate(lines, 1) if line.strip()]
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
        items.append((messages[-2]["content"], InputItem(logged=messages[-1]["content"], line=lineno)))
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


def load_inputs(spec: PromptSpec, quiet: bool = False) -> dict[str, InputItem]:
    """All inputs of the spec (input text -> label / logged answer), de-duplicated in first-seen order (repeats
    reported unless `quiet`), optionally cut to `inputs.limit`."""
    src = spec.inputs
    if src.path is None:
        items, where = _expand_template(spec), f"{spec.source}: field 'inputs.template'"
    elif src.format == "chat_logs":
        items, where = _read_chat_logs(spec.inputs_path(), src.system_prompts), str(spec.inputs_path())
    else:
        items = _read_rows(spec.inputs_path(), src.field, src.label_field, src.label_fields)
        where = str(spec.inputs_path())
    long = [(item.line, len(text)) for text, item in items if len(text) > src.max_chars]
    if long:
        at = ", ".join(f"line {line}: {n:,} characters" if line is not None else f"{n:,} characters"
                       for line, n in long[:3])
        log.warning("%s: %d input(s) longer than inputs.max_chars=%d were dropped (%s%s)", where, len(long),
                    src.max_chars, at, ", ..." if len(long) > 3 else "")
        items = [(text, item) for text, item in items if len(text) <= src.max_chars]
    inputs: dict[str, InputItem] = {}
    repeats: list[int | None] = []
    for text, item in items:
        key = " ".join(text.split()) if src.path is None else text.strip()
        if key in inputs:
            repeats.append(item.line)
        else:
            inputs[key] = item
    if repeats and not quiet:
        report_duplicates(where, repeats, len(items), len(inputs))
    if not inputs and long:
        raise InputError(f"{where}: no inputs left: every one is longer than inputs.max_chars={src.max_chars}")
    if not inputs:
        raise InputError(f"{where}: no inputs (the file is empty"
                         f"{' or no log carries one of the allowed system prompts' if src.system_prompts else ''})")
    if src.limit is not None and src.limit < len(inputs):
        keep = set(random.Random(spec.split.seed).sample(list(inputs), src.limit))
        inputs = {t: item for t, item in inputs.items() if t in keep}
    return inputs


def report_duplicates(where: str, repeats: list[int | None], n_items: int, n_distinct: int) -> None:
    """Say that repeated inputs were dropped, how many, and where the first repeats stand: a file that looks
    large may hold few distinct inputs, and that changes how much a model can learn from it."""
    lines = [str(n) for n in repeats if n is not None][:5]
    at = f" (repeats at line {', '.join(lines)}{', ...' if len(repeats) > len(lines) else ''})" if lines else ""
    log.warning("%s: %d of %d inputs repeat an earlier one and were dropped%s; %d distinct inputs remain",
                where, len(repeats), n_items, at, n_distinct)


def split_inputs(texts: list[str], eval_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Seeded split by input: each input is on exactly one side; at least one input on each side."""
    if len(texts) < 2:
        raise InputError(f"need at least 2 distinct inputs to split into train and eval, got {len(texts)}")
    order = sorted(texts, key=input_id)  # independent of source order
    random.Random(seed).shuffle(order)
    n_eval = min(max(1, round(len(order) * eval_fraction)), len(order) - 1)
    return order[n_eval:], order[:n_eval]


def carve_validation(train: list[str], size: int, seed: int) -> tuple[list[str], list[str]]:
    """Set `size` of the training inputs aside as a validation slice (seeded, independent of source order);
    at least one input stays on the training side."""
    if size == 0:
        return train, []
    if size >= len(train):
        raise InputError(f"split.validation_size={size} leaves no training input (only {len(train)} after the "
                         "eval split)")
    order = sorted(train, key=input_id)
    random.Random(seed + 1).shuffle(order)  # +1: not the permutation that chose the eval split
    val = set(order[:size])
    return [t for t in train if t not in val], [t for t in train if t in val]
