"""Merge the shards of a sharded build into the dataset one unsharded build writes.

    promptbake data merge runs/demo/data runs/demo/data-shard-1-of-3 runs/demo/data-shard-2-of-3 \\
        runs/demo/data-shard-3-of-3
    python -m data_tools.merge OUT DIR [DIR ...]

Each shard (`promptbake data build SPEC shard=i/N`, data_tools/shards.py) answered its part of the training
inputs and wrote the eval split of the whole. The merge writes to OUT the files an unsharded build writes:
the training rows of every shard in the unsharded build's order (each shard recorded its inputs' positions
in it), the eval and validation inputs once, the teacher journal, `hf/`, and one manifest whose counts and
pass rates are those of the whole. With a teacher that answers an input the same wherever it runs (labels,
logged answers, greedy decoding of one input per batch), the merged files equal an unsharded build's line
for line. A sampling teacher seeds each sample from its prompt (`Sampling.stream_seed`), so a shard asks for the
draws the unsharded build asks for: the same answers from the local backend, up to float-level differences
between batches of other shapes, and from a server that honours seeds.
Either way OUT is a finished unsharded build: `promptbake data build SPEC output_dir=OUT` generates nothing.

It refuses, naming the directories: a shard whose build did not finish, a build that is not a shard, shards
of different specs (with the fields that differ) or of different input files, different N, a shard given
twice, and a missing shard.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from data_tools.build import JOURNAL, claim_build_dir, fixed_answer_finding, print_summary, save_datasets
from data_tools.inputs import input_id, load_inputs
from data_tools.spec import load_spec
from promptbake.core.config import InputError
from promptbake.core.entry import stage_parser
from promptbake.core.io import iter_jsonl, write_json, write_jsonl
from promptbake.core.layout import DatasetLayout

# each file's rows, and how to find the input a row belongs to
TRAIN_FILES = {
    DatasetLayout.SFT_TRAIN: lambda row: row["prompt"][0]["content"],
    DatasetLayout.PREFS_TRAIN: lambda row: row["prompt"][0]["content"],
    DatasetLayout.TRAIN_INPUTS: lambda row: row["prompt"][0]["content"],
    DatasetLayout.REJECTS: lambda row: row["input"],
}
# the same in every shard (the split of the whole), with the count that says whether the build wrote it
SHARED_FILES = {DatasetLayout.EVAL_INPUTS: "eval_inputs", DatasetLayout.VAL_INPUTS: "val_inputs"}
# every other count is a sum over the shards
SHARED_COUNTS = ("inputs", "val_inputs", "eval_inputs", "leaked_train_inputs_dropped")


def read_shard(directory: Path) -> dict:
    """The manifest of a finished shard build."""
    if not directory.is_dir():
        raise InputError(f"{directory}: no such directory")
    path = directory / DatasetLayout.MANIFEST
    if not path.is_file():
        raise InputError(f"{directory}: an unfinished build (no manifest.json, which a build writes last): run "
                         "its `promptbake data build SPEC shard=i/N` again, which resumes it, then merge")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if "shard" not in manifest:
        raise InputError(f"{directory}: an unsharded build (its manifest has no `shard`), not a shard to merge")
    return manifest


def flatten(value, prefix: str = "") -> dict[str, object]:
    """{"a": {"b": 1}, "c": [2]} -> {"a.b": 1, "c.0": 2}: the dotted names the command line's overrides use."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else None
    if items is None:
        return {prefix: value}
    flat = {}
    for key, inner in items:
        flat.update(flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def spec_differences(a: dict, b: dict, most: int = 5) -> str:
    """The fields in which two shards' specs differ, e.g. `teacher.sampling.seed: 0 vs 7`."""
    flat_a, flat_b = flatten(a["shard"]["spec_settings"]), flatten(b["shard"]["spec_settings"])
    names = [k for k in dict.fromkeys([*flat_a, *flat_b]) if flat_a.get(k, "(unset)") != flat_b.get(k, "(unset)")]
    shown = [f"{k}: {flat_a.get(k, '(unset)')!r} vs {flat_b.get(k, '(unset)')!r}" for k in names[:most]]
    return "; ".join(shown) + (f"; and {len(names) - most} more" if len(names) > most else "")


def check_shards(shards: list[tuple[Path, dict]]) -> None:
    """Refuse shards that do not make up one build, naming every problem and the directories involved."""
    problems = []
    first_dir, first = shards[0]
    for directory, manifest in shards[1:]:
        pair = f"{first_dir} and {directory}"
        if manifest["spec_hash"] != first["spec_hash"]:
            problems.append(f"{pair} are shards of different specs (spec_hash {first['spec_hash']} vs "
                            f"{manifest['spec_hash']}): {spec_differences(first, manifest) or 'see their manifests'}")
        elif manifest["shard"]["inputs_digest"] != first["shard"]["inputs_digest"]:
            problems.append(f"{pair} read different inputs (the spec's input file differs between them)")
        if manifest["shard"]["count"] != first["shard"]["count"]:
            problems.append(f"{pair} split the build differently: {first_dir} is shard "
                            f"{first['shard']['index']} of {first['shard']['count']}, {directory} is shard "
                            f"{manifest['shard']['index']} of {manifest['shard']['count']}")
    if problems:
        raise InputError("\n".join(problems))
    count = first["shard"]["count"]
    seen: dict[int, Path] = {}
    for directory, manifest in shards:
        index = manifest["shard"]["index"]
        if index in seen:
            problems.append(f"{seen[index]} and {directory} are both shard {index} of {count}")
        seen.setdefault(index, directory)
    missing = [str(i) for i in range(1, count + 1) if i not in seen]
    if missing:
        problems.append(f"shard{'s' * (len(missing) > 1)} {', '.join(missing)} of {count} missing: given "
                        f"{len(seen)} of {count} ({', '.join(f'{i}/{count}' for i in sorted(seen))})")
    # the threshold of teacher.auto_hint is decided per shard; where all shards that answered anything agree,
    # the whole agrees with them, else an unsharded build could have decided either way
    hinted = {d: "hinted_inputs" in m["counts"] for d, m in shards if m["counts"]["train_inputs"]}
    if len(set(hinted.values())) > 1:
        problems.append(f"the auto-hint round (teacher.auto_hint) ran in {[str(d) for d, h in hinted.items() if h]} "
                        f"but not in {[str(d) for d, h in hinted.items() if not h]}: an unsharded build decides it "
                        "once for all inputs; rebuild the shards with teacher.auto_hint=false or teacher.hint set")
    if problems:
        raise InputError("\n".join(problems))


def read_positions(shards: list[tuple[Path, dict]]) -> dict[str, int]:
    """Input id -> position in the unsharded training order, over all shards; refuses overlaps and gaps."""
    positions: dict[str, int] = {}
    for directory, manifest in shards:
        for _, record in iter_jsonl(directory / manifest["shard"]["positions"]):
            positions[record["id"]] = record["position"]
    total = shards[0][1]["shard"]["train_inputs_total"]
    if sorted(positions.values()) != list(range(total)):
        raise InputError(f"the shards' {[str(d) for d, _ in shards]} training inputs ({len(positions)}) are not "
                         f"the {total} of one build: rebuild them with the same spec and input file")
    return positions


def merge_rows(out: Path, shards: list[tuple[Path, dict]], positions: dict[str, int]) -> None:
    """Every training file in the unsharded order, the shared files once, the journal by (round, position)."""
    for name, text_of in TRAIN_FILES.items():
        rows = [row for directory, _ in shards for _, row in iter_jsonl(directory / name)]
        write_jsonl(out / name, sorted(rows, key=lambda row: positions[input_id(text_of(row))]))
    first_dir, first = shards[0]
    for name, count in SHARED_FILES.items():
        if first["counts"][count]:
            write_jsonl(out / name, [row for _, row in iter_jsonl(first_dir / name)])
    journals = [d / JOURNAL for d, _ in shards if (d / JOURNAL).exists()]
    records = [r for path in journals for _, r in iter_jsonl(path) if r["id"] in positions]
    if records:  # the labels and logs teachers keep no journal
        write_jsonl(out / JOURNAL, sorted(records, key=lambda r: (r.get("round", 1), positions[r["id"]])))


def merged_manifest(shards: list[tuple[Path, dict]]) -> dict:
    """One build's manifest: summed counts, pass rates over all samples, the shards it came from."""
    manifests = [m for _, m in shards]
    first = manifests[0]
    counts = {}
    for key in dict.fromkeys(k for m in manifests for k in m["counts"]):
        values = [m["counts"].get(key, 0) for m in manifests]
        counts[key] = values[0] if key in SHARED_COUNTS else sum(values)
    samples = counts["samples"]
    # a shard's rate times its samples is the whole number of passing samples it counted
    passes = {rule: sum(round(m["raw_pass_rate_per_rule"][rule] * m["counts"]["samples"]) for m in manifests)
              for rule in first["raw_pass_rate_per_rule"]}
    all_pass = sum(round(m["raw_all_rules_pass_rate"] * m["counts"]["samples"]) for m in manifests)
    time_s = sum(m["time_s"] for m in manifests)
    return {
        **{k: first[k] for k in ("spec", "spec_path", "spec_hash", "teacher")},
        "counts": counts,
        "raw_pass_rate_per_rule": {rule: n / max(samples, 1) for rule, n in passes.items()},
        "raw_all_rules_pass_rate": all_pass / max(samples, 1),
        "provenance": {k: sum(m.get("provenance", {}).get(k, 0) for m in manifests)
                       for k in first.get("provenance", {})},
        # one shard's finding, from its rows; main() redoes it on all of them when the spec file still matches
        "fixed_answer": first.get("fixed_answer") and {**first["fixed_answer"], "from": "shard 1's rows"},
        "time_s": round(time_s, 1),  # summed over the shards: machine time, not the wall time of the build
        "examples_per_s": round(samples / time_s, 3) if time_s else None,
        "profile_s": {k: round(sum(m.get("profile_s", {}).get(k, 0.0) for m in manifests), 1)  # machine time too
                      for k in first.get("profile_s", {})},
        "merged_from": [{"dir": str(d), "shard": f"{m['shard']['index']}/{m['shard']['count']}",
                         "time_s": m["time_s"], **{k: m[k] for k in ("teacher_endpoints",) if k in m}}
                        for d, m in shards],
    }


def spec_of_build(manifest: dict):
    """The spec the shards were built from, when its file still says so: the file with the manifest's teacher
    (shards usually differ from the file only in their teacher settings); None when the hash disagrees."""
    path = Path(manifest["spec_path"])
    if not path.exists():
        return None
    spec = load_spec(path)
    spec = spec.model_copy(update={"teacher": spec.teacher.model_validate(manifest["teacher"])})
    return spec if spec.content_hash() == manifest["spec_hash"] else None


def main(out: str | Path, dirs: list[str | Path]) -> dict:
    """Merge the shard builds in `dirs` into `out`; returns the merged manifest."""
    out = Path(out)
    dirs = [Path(d) for d in dirs]
    if out.resolve() in {d.resolve() for d in dirs}:
        raise InputError(f"{out}: the merge's output is one of the shards it merges; give another directory")
    shards = [(d, read_shard(d)) for d in dirs]
    check_shards(shards)
    shards.sort(key=lambda s: s[1]["shard"]["index"])
    positions = read_positions(shards)
    manifest = merged_manifest(shards)
    if not manifest["counts"]["sft_rows"]:
        raise InputError(f"no teacher sample passed every check in any shard, even after repair; see the shards' "
                         f"rejects.jsonl ({', '.join(str(d) for d in dirs)})")
    claim_build_dir(out, manifest["spec_hash"])  # the user's files or another spec's build: refused, untouched
    (out / DatasetLayout.MANIFEST).unlink(missing_ok=True)  # the manifest marks a finished build: it goes last
    merge_rows(out, shards, positions)
    spec = spec_of_build(manifest)
    if spec is not None:
        items = [(t, item.label) for t, item in load_inputs(spec, quiet=True).items()]
        rows = [row for _, row in iter_jsonl(out / DatasetLayout.SFT_TRAIN)]
        manifest["fixed_answer"] = fixed_answer_finding(spec, items, rows)
    save_datasets(out)
    write_json(out / DatasetLayout.MANIFEST, manifest)
    print_summary(manifest, out)
    print(f"[promptbake] merged {len(shards)} shards; their builds took {manifest['time_s']} s in all")
    return manifest


def make_parser(subparsers: argparse._SubParsersAction | None = None) -> argparse.ArgumentParser:
    """`promptbake data merge` (added to `subparsers`) or `python -m data_tools.merge`."""
    parser = stage_parser(subparsers, "merge", "merge the shards of a sharded build (data build SPEC shard=i/N) "
                                               "into one dataset")
    parser.add_argument("out", help="where the merged dataset goes, e.g. runs/demo/data")
    parser.add_argument("dirs", nargs="+", help="the shards' output directories, e.g. runs/demo/data-shard-*-of-3")
    parser.set_defaults(run=lambda args: main(args.out, args.dirs))
    return parser


if __name__ == "__main__":
    from promptbake.core.entry import run_command

    run_command(make_parser())
