"""Sharded builds and their merge: `promptbake data build SPEC shard=i/N` on each "machine", killed and resumed,
then `promptbake data merge OUT DIR...` gives exactly the files of one unsharded build; the merge refuses
shards that do not make up one build, naming them."""

import json
import os
import random
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from test_crash_safety import REPO, journal_lines, kill_when, start

from data_tools import build, merge
from data_tools.shards import POSITIONS, Shard, load_sharded
from data_tools.spec import load_spec
from promptbake.core.config import InputError

ROW_FILES = ["sft_train.jsonl", "prefs_train.jsonl", "rejects.jsonl", "train_inputs.jsonl", "eval_inputs.jsonl",
             "val_inputs.jsonl"]
THINGS = ["cats", "dogs", "rain", "snow", "tea", "bread", "maps", "ships", "stars", "trees", "books", "rivers",
          "clocks", "bees", "salt", "glass", "kites", "owls", "bridges", "coins", "lamps", "wolves", "tides", "moss",
          "forks", "drums", "caves", "ink", "sails", "frost"]
# the tiny model answers greedily, one input per batch: an input's answer is the same whichever shard holds it
# (best-of-n sampling draws from a generator seeded per batch, so its samples depend on a batch's neighbours)
GREEDY = ["teacher.batch_size=1", "teacher.sampling={n: 1, temperature: 0.0, max_new_tokens: 8}",
          f"inputs.slots.thing=[{', '.join(THINGS)}]", "split.validation_size=2",
          # a rule no repair fixes: some inputs end in rejects.jsonl
          "rules.2={id: no_u, text: Never use the letter u., check: {kind: not_contains, phrases: [u]}}"]


@pytest.fixture(scope="module")
def talkative_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model with larger random weights. With the default small ones it repeats the prompt's last token
    (a newline) when decoding greedily, so every answer would be empty and alike; these say something different
    to each input, which the merge must then put back in the right place."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.initializer_range = 0.2
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("talkative")
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "promptbake.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def manifest_of(directory: Path) -> dict:
    return json.loads((directory / "manifest.json").read_text())


def test_shards_killed_and_resumed_merge_to_one_unsharded_build(tiny_spec, talkative_model_dir, reliability_log):
    greedy = [*GREEDY, f"teacher.model={talkative_model_dir}"]
    base = tiny_spec.parent / "data"
    dirs = [tiny_spec.parent / f"data-shard-{i}-of-3" for i in (1, 2, 3)]  # the default: beside `output_dir`
    rng = random.Random(13)
    # the unsharded build runs alongside, uninterrupted, as the reference
    reference = start(["data", "build", str(tiny_spec), *greedy])
    procs = [start(["data", "build", str(tiny_spec), *greedy, f"shard={i}/3"]) for i in (1, 2, 3)]
    kills = [False] * 3
    plan = [(rng.uniform(0.1, 0.9), rng.uniform(0, 0.1)) for _ in dirs]

    def kill_midway(k: int) -> None:  # after a random share of the shard's inputs is journaled, plus a moment
        share, extra = plan[k]
        journal, positions = dirs[k] / build.JOURNAL, dirs[k] / POSITIONS

        def ready() -> bool:
            return positions.exists() and journal_lines(journal) >= max(1, int(share * len(lines(positions))))
        kills[k] = kill_when(procs[k], ready, extra)

    watchers = [threading.Thread(target=kill_midway, args=(k,)) for k in range(3)]
    for w in watchers:
        w.start()
    for w in watchers:
        w.join()
    assert all(kills), f"a shard finished before its kill landed ({kills}); the test proved nothing"
    with pytest.raises(InputError, match="unfinished build"):  # a killed shard has no manifest: nothing to merge
        merge.main(tiny_spec.parent / "merged", dirs)

    resumed = [start(["data", "build", str(tiny_spec), *greedy, f"shard={i}/3"]) for i in (1, 2, 3)]
    assert [p.wait(timeout=300) for p in [reference, *resumed]] == [0, 0, 0, 0]
    sizes = [manifest_of(d)["shard"]["train_inputs"] for d in dirs]
    assert min(sizes) >= 3 and sum(sizes) == manifest_of(base)["counts"]["train_inputs"]
    out = tiny_spec.parent / "merged"
    result = run_cli("data", "merge", str(out), str(dirs[2]), str(dirs[0]), str(dirs[1]))  # any order
    assert result.returncode == 0, result.stderr[-2000:]

    for name in ROW_FILES:  # line for line, in the unsharded build's order
        assert lines(out / name) == lines(base / name) and lines(base / name), name
    journal = [json.loads(x) for x in lines(out / build.JOURNAL)]
    assert sorted(map(json.dumps, journal)) == sorted(map(json.dumps, map(json.loads, lines(base / build.JOURNAL))))
    assert len({r["id"] for r in journal}) == len(journal)  # each input answered once, kills and all
    merged, unsharded = manifest_of(out), manifest_of(base)
    # the shards were built with overrides: the merge cannot reload their spec, and says whose rows found the
    # fixed answer (data_tools/merge.py spec_of_build)
    timing = ("time_s", "examples_per_s", "profile_s", "merged_from", "fixed_answer")
    assert {k: v for k, v in merged.items() if k not in timing} == \
        {k: v for k, v in unsharded.items() if k not in timing}
    assert merged["fixed_answer"]["from"] == "shard 1's rows"
    assert [m["shard"] for m in merged["merged_from"]] == ["1/3", "2/3", "3/3"]
    from datasets import load_from_disk

    sft_rows = [json.loads(x) for x in lines(base / "sft_train.jsonl")]
    assert load_from_disk(str(out / "hf"))["sft_train"].to_list() == sft_rows
    # the merged directory is a finished unsharded build: building into it generates nothing (no model loads)
    again = build.main(load_spec(tiny_spec, [*greedy, f"output_dir={out}"]))
    assert again["counts"] == unsharded["counts"] and lines(out / "sft_train.jsonl") == lines(base / "sft_train.jsonl")
    reliability_log("faults_injected", sum(kills))


LABELLED = """\
name: labelled
rules:
  - {{id: prefix, text: Start with ok., check: {{kind: starts_with, prefix: 'ok:'}}}}
inputs: {{path: inputs.jsonl, label_field: answer}}
teacher: {{backend: labels, repair: false}}
split: {{eval_fraction: 0.25, validation_size: 2, seed: 0}}
output_dir: {out}
"""


def labelled_spec(folder: Path, n_inputs: int = 24) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "inputs.jsonl").write_text("".join(
        json.dumps({"input": f"question {i}", "answer": "ok: yes" if i % 3 else "No, Sir"}) + "\n"
        for i in range(n_inputs)))
    (folder / "spec.yaml").write_text(LABELLED.format(out=folder / "data"))
    return folder / "spec.yaml"


def build_shard(spec_path: Path, shard: str, *overrides: str) -> Path:
    spec, parsed = load_sharded(str(spec_path), [f"shard={shard}", *overrides])
    build.main(spec, parsed)
    return Path(spec.output_dir)


@pytest.fixture
def labelled_shards(tmp_path) -> tuple[Path, list[Path]]:
    spec = labelled_spec(tmp_path)
    return spec, [build_shard(spec, f"{i}/3") for i in (1, 2, 3)]


def test_labels_shards_merge_to_the_unsharded_build(labelled_shards, tmp_path):
    spec, dirs = labelled_shards
    build.main(load_spec(spec))
    merge.main(tmp_path / "merged", dirs)
    for name in ROW_FILES:
        assert lines(tmp_path / "merged" / name) == lines(tmp_path / "data" / name), name
    merged, whole = manifest_of(tmp_path / "merged"), manifest_of(tmp_path / "data")
    assert merged["counts"] == whole["counts"] and merged["provenance"] == whole["provenance"]
    assert merged["fixed_answer"] == whole["fixed_answer"]  # redone on all the rows: the spec file still matches
    eval_files = {(d / "eval_inputs.jsonl").read_text() for d in dirs}
    assert len(eval_files) == 1  # every shard holds the same eval split, the unsharded one
    assert not (tmp_path / "merged" / build.JOURNAL).exists()  # the labels teacher keeps no journal


def test_adding_inputs_moves_no_input_to_another_shard(tmp_path):
    def shard_ids(n_inputs: int, shard: str) -> set[str]:
        spec = labelled_spec(tmp_path / str(n_inputs), n_inputs)
        return {json.loads(x)["id"] for x in lines(build_shard(spec, shard) / POSITIONS)}

    small, large = shard_ids(24, "1/3"), shard_ids(60, "1/3")
    train_large = shard_ids(60, "2/3") | shard_ids(60, "3/3") | large
    # the larger source's eval split takes some inputs off the training side; the rest stay in shard 1
    assert small & train_large and small & train_large <= large


def test_merge_refuses_shards_of_another_spec_naming_dirs_and_fields(labelled_shards):
    spec, dirs = labelled_shards
    other = build_shard(spec, "2/3", "teacher.repair=true", f"output_dir={dirs[1]}-other")
    with pytest.raises(InputError) as e:
        merge.main(dirs[0].parent / "merged", [dirs[0], other, dirs[2]])
    assert f"{dirs[0]} and {other} are shards of different specs" in str(e.value)
    assert "teacher.repair: False vs True" in str(e.value)


def test_merge_refuses_shards_of_other_inputs(labelled_shards):
    spec, dirs = labelled_shards
    copy = spec.parent / "copy"
    copy.mkdir()
    (copy / "inputs.jsonl").write_text((spec.parent / "inputs.jsonl").read_text().replace("No, Sir", "No"))
    shutil.copy(spec, copy / "spec.yaml")
    other = build_shard(copy / "spec.yaml", "3/3", f"output_dir={copy / 'data'}")
    with pytest.raises(InputError, match=f"{dirs[0]} and {other} read different inputs"):
        merge.main(spec.parent / "merged", [*dirs[:2], other])


def test_merge_refuses_missing_duplicated_and_mismatched_shards(labelled_shards):
    spec, dirs = labelled_shards
    out = spec.parent / "merged"
    with pytest.raises(InputError, match=r"shard 2 of 3 missing: given 2 of 3 \(1/3, 3/3\)"):
        merge.main(out, [dirs[0], dirs[2]])
    twin = Path(f"{dirs[1]}-twin")
    shutil.copytree(dirs[1], twin)
    with pytest.raises(InputError, match=f"{dirs[1]} and {twin} are both shard 2 of 3"):
        merge.main(out, [*dirs, twin])
    halves = build_shard(spec, "1/2")
    with pytest.raises(InputError, match=f"{dirs[0]} is shard 1 of 3, {halves} is shard 1 of 2"):
        merge.main(out, [*dirs, halves])
    (twin / "manifest.json").unlink()
    with pytest.raises(InputError, match=f"{twin}: an unfinished build"):
        merge.main(out, [dirs[0], dirs[2], twin])
    build.main(load_spec(spec))
    with pytest.raises(InputError, match=f"{spec.parent / 'data'}: an unsharded build"):
        merge.main(out, [*dirs, spec.parent / "data"])
    assert not out.exists()  # refused before writing anything


def test_merge_refuses_shards_that_decided_the_auto_hint_differently(labelled_shards):
    # the labels teacher never needs a hint: shard 2's manifest says what a generating teacher's would have
    spec, dirs = labelled_shards
    manifest = manifest_of(dirs[1])
    manifest["counts"].update(hinted_inputs=3, hinted_rescued=1)
    (dirs[1] / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match=rf"auto-hint round .* ran in \['{dirs[1]}'\] but not in"):
        merge.main(spec.parent / "merged", dirs)


@pytest.mark.parametrize("value", ["3/2", "0/2", "a/b", "1/0", "2"])
def test_bad_shard_is_refused_naming_the_field_before_anything_runs(tmp_path, value):
    spec = labelled_spec(tmp_path)
    with pytest.raises(InputError, match=f"override 'shard={value}': field 'shard'"):
        load_sharded(str(spec), [f"shard={value}"])
    assert not (tmp_path / "data").exists()


def test_bad_shard_on_the_command_line_exits_2(tmp_path):
    result = run_cli("data", "build", str(labelled_spec(tmp_path)), "shard=3/2")
    assert result.returncode == 2 and "field 'shard': shard 3 of 2 does not exist" in result.stderr
    assert not (tmp_path / "data-shard-3-of-2").exists()


def test_sharded_build_refuses_synthesis(tiny_spec):
    spec = load_spec(tiny_spec, ["synthesis.min_inputs=100"])
    with pytest.raises(InputError, match="field 'synthesis.min_inputs'.*sharded build .field 'shard'"):
        build.main(spec, Shard(1, 2))
