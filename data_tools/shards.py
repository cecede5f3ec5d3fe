"""Sharded builds: N machines share one build, each answering a deterministic 1/N of the training inputs.

    promptbake data build configs/specs/demo_style.yaml shard=2/3     # -> runs/demo/data-shard-2-of-3
    promptbake data merge runs/demo/data runs/demo/data-shard-{1,2,3}-of-3

Which shard an input belongs to follows from its id (a hash of its text) alone, never from its position in
the source: adding inputs moves no input to another shard. The eval split and the validation slice are
decided first, over all inputs, exactly as an unsharded build decides them; only the training side is
split, so every shard writes the same eval_inputs.jsonl (and val_inputs.jsonl), and the merge
(data_tools/merge.py) joins the training rows into the files one unsharded build writes, in its order.

`shard=i/N` is an option of the build, not a field of the spec: every shard keeps the spec's hash, which is
how the merge tells shards of one build from shards of another.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from data_tools.inputs import InputItem, input_id
from data_tools.spec import PromptSpec, load_spec
from promptbake.core.config import InputError
from promptbake.core.io import write_jsonl

POSITIONS = "shard_inputs.jsonl"
"""A shard's training inputs: each one's id and position in the unsharded build's training order."""


@dataclass(frozen=True)
class Shard:
    index: int
    """1-based: shard=1/3 is the first of three."""
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, text: str) -> bool:
        return int(input_id(text), 16) % self.count == self.index - 1

    def directory(self, output_dir: str) -> str:
        """Where the shard goes when the command line names no `output_dir`: beside the unsharded build's."""
        return f"{output_dir.rstrip('/')}-shard-{self.index}-of-{self.count}"


def parse_shard(item: str) -> Shard:
    """`shard=i/N` from the command line, 1 <= i <= N."""
    value = item.partition("=")[2].strip()
    match = re.fullmatch(r"(\d+)/(\d+)", value)
    problem = None if match else "expected i/N, two whole numbers"
    if match:
        index, count = int(match[1]), int(match[2])
        if count < 1 or not 1 <= index <= count:
            problem = f"shard {index} of {count} does not exist: i runs from 1 to N"
    if problem:
        raise InputError(f"override {item!r}: field 'shard': {problem}, e.g. shard=1/4 (the first of four shards)")
    return Shard(index, count)


def load_sharded(spec_path: str, overrides: list[str]) -> tuple[PromptSpec, Shard | None]:
    """The spec with the command line's overrides, and the shard that `shard=i/N` among them names (None
    without one). A shard's output goes beside the spec's `output_dir` unless the command line sets one."""
    given = [o for o in overrides if o.partition("=")[0].strip() == "shard"]
    if len(given) > 1:
        raise InputError(f"field 'shard': given {len(given)} times ({', '.join(given)}); a build is one shard")
    shard = parse_shard(given[0]) if given else None
    rest = [o for o in overrides if o not in given]
    spec = load_spec(spec_path, rest)
    if shard is not None and not any(o.partition("=")[0].strip() == "output_dir" for o in rest):
        spec.output_dir = shard.directory(spec.output_dir)
    return spec, shard


def inputs_digest(inputs: dict[str, InputItem]) -> str:
    """Identifies the inputs a build read (texts, labels, logged answers, in order): the spec's hash names the
    input file, not what it holds, and shards built on different machines may have read different copies."""
    digest = hashlib.sha256()
    for text, item in inputs.items():
        digest.update(json.dumps([text, item.label, item.logged], ensure_ascii=False).encode() + b"\n")
    return digest.hexdigest()[:16]


def shard_train(spec: PromptSpec, shard: Shard, inputs: dict[str, InputItem], train: list[str], out_dir: Path
                ) -> tuple[list[str], dict]:
    """The shard's part of `train` (the unsharded build's training inputs, in its order) and the manifest's
    `shard` entry; writes POSITIONS, by which the merge puts rows back in the unsharded order."""
    if spec.synthesis.min_inputs > len(inputs):
        # the teacher writes synthesized inputs at random: each shard would write others, and no merge of them
        # equals one build; synthesis serves small specs anyway, which need no shards
        raise InputError(f"{spec.source}: field 'synthesis.min_inputs' ({spec.synthesis.min_inputs}) asks the "
                         f"teacher to write inputs (the spec has {len(inputs)}): a sharded build (field 'shard') "
                         "cannot, as each shard would write different ones; build unsharded or set "
                         "synthesis.min_inputs=0")
    mine = [(position, text) for position, text in enumerate(train) if shard.holds(text)]
    write_jsonl(out_dir / POSITIONS, [{"id": input_id(t), "position": p} for p, t in mine])
    info = {"index": shard.index, "count": shard.count, "train_inputs": len(mine),
            "train_inputs_total": len(train), "inputs_digest": inputs_digest(inputs), "positions": POSITIONS,
            # the settings behind spec_hash, so that a merge can say what differs between two shards' specs
            "spec_settings": spec.model_dump(mode="json", exclude={"output_dir", "source"})}
    return [text for _, text in mine], info
