"""Nothing a user owns is ever lost, and a wrong path is refused before anything loads.

Every command that writes a directory (export --out and its gguf/ beside it, data build, data merge, a trainer's
adapter/, the bake's run directory) is pointed at a directory holding the user's `notes.txt` and `sub/keep.txt`:
each exits 2 with one line naming the directory, and the files are still there byte for byte. A promptbake output
is replaced only by its own kind (and at an explicit --out, only with --force, which says what it replaces).
Outputs honour the umask. Model paths that name nothing are refused at validation, without a model loading.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from refusal import assert_quick_refusal, run_refused

from promptbake.cli import main as cli
from promptbake.core.config import InputError
from promptbake.core.io import MARKER, atomic_dir, atomic_write_text, check_output_dir, current_umask
from promptbake.core.models import RUN_INFO_FILE

USER_FILES = {"notes.txt": b"my notes\n", "sub/keep.txt": b"\x00keep this\xff"}

LABELS_SPEC = """\
name: {name}
rules:
  - id: lower
    text: Write in lowercase.
    check: {{kind: lowercase}}
inputs:
  path: inputs.jsonl
  label_field: answer
teacher: {{backend: labels}}
split: {{eval_fraction: 0.25, seed: 0}}
output_dir: {out}
"""


def user_dir(path: Path) -> Path:
    for name, content in USER_FILES.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(content)
    return path


def snapshot(path: Path) -> dict[str, bytes]:
    """Every file under `path` (the markers included) with its bytes: what a refused command must not change."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture
def refused(tmp_path, reliability_log):
    """Run a command that must be refused, as a process of its own (tests/refusal.py): exit 2, one line, no
    traceback, before torch is imported (so before any model or tokenizer loads), within seconds."""

    def run(argv: list[str]) -> str:
        refusal = run_refused(argv, tmp_path)
        assert_quick_refusal(refusal, reliability_log)
        assert refusal.err.startswith("error: ") and "\n" not in refusal.err, refusal.err
        return refusal.err
    return run


@pytest.fixture
def kept(reliability_log):
    """Assert that a refused command left `path` as `before` (its snapshot); the files it lost or changed are
    logged for the reliability report (user_files_deleted)."""

    def check(path: Path, before: dict[str, bytes]) -> None:
        after = snapshot(path)
        reliability_log("user_files_checked", len(before))
        reliability_log("user_files_deleted", sum(after.get(name) != data for name, data in before.items()))
        assert after == before
    return check


@pytest.fixture
def tiny_run(tmp_path, tiny_model_dir) -> Path:
    """A training run as `promptbake train` leaves it: adapter/ with promptbake_run.json, on the tiny base."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = tmp_path / "run"
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    model.save_pretrained(run / "adapter")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(run / "adapter")
    (run / "adapter" / RUN_INFO_FILE).write_text(json.dumps({"base_model": str(tiny_model_dir), "method": "lora"}))
    return run


def labels_spec(tmp_path: Path, name: str = "first", out: Path | None = None) -> Path:
    (tmp_path / "inputs.jsonl").write_text("".join(json.dumps({"input": f"question {i}", "answer": f"answer {i}"})
                                                   + "\n" for i in range(12)))
    path = tmp_path / f"{name}.yaml"
    path.write_text(LABELS_SPEC.format(name=name, out=out or tmp_path / "data"))
    return path


# ---- every command that writes a directory refuses the user's ------------------------------------------------


@pytest.mark.parametrize("flags", [[], ["--force"]])
def test_export_out_holding_user_files_is_refused_even_with_force(tiny_run, tmp_path, flags, refused, kept):
    out = user_dir(tmp_path / "mine")
    before = snapshot(out)
    err = refused(["export", str(tiny_run), "--out", str(out), *flags])
    assert f"{out}: exists and holds files promptbake did not write (2 entries: notes.txt, sub/)" in err
    kept(out, before)
    assert not list(tmp_path.glob(".mine.*"))  # no temporary directory made either


def test_export_gguf_beside_out_holding_user_files_is_refused_before_the_merge(tiny_run, tmp_path, refused, kept):
    mine = user_dir(tmp_path / "gguf" / "f16")
    before = snapshot(tmp_path / "gguf")
    err = refused(["export", str(tiny_run), "--out", str(tmp_path / "merged"), "--gguf", "f16"])
    assert f"{mine}: exists and holds files promptbake did not write" in err
    kept(tmp_path / "gguf", before)
    assert not (tmp_path / "merged").exists()


def test_force_replaces_a_promptbake_export_and_says_what_it_replaces(tiny_run, tmp_path, capsys, refused, kept):
    out = tmp_path / "exported"
    cli(["export", str(tiny_run), "--out", str(out)])
    marker = json.loads((out / MARKER).read_text())
    assert marker["kind"] == "export" and marker["source"] == str(tiny_run / "adapter")
    assert out.stat().st_mode & 0o777 == 0o777 & ~current_umask()  # not mkdtemp's 0700
    capsys.readouterr()
    before = snapshot(out)

    err = refused(["export", str(tiny_run), "--out", str(out)])
    assert f"{out}: holds a promptbake export of {tiny_run / 'adapter'}, written {marker['written_at']}" in err
    assert err.rstrip().endswith("--force replaces it")
    kept(out, before)

    cli(["export", str(tiny_run), "--out", str(out), "--force"])
    said = capsys.readouterr().out
    assert f"[promptbake] replacing {out}: a promptbake export of {tiny_run / 'adapter'}" in said
    assert (out / "model.safetensors").is_file() and json.loads((out / MARKER).read_text())["kind"] == "export"


def test_export_into_the_run_directory_redoes_its_own_export_without_force(tiny_run, capsys):
    """RUN_DIR/merged (no --out) belongs to the run: a second export replaces it as before, and says so."""
    cli(["export", str(tiny_run)])
    cli(["export", str(tiny_run)])
    assert f"replacing {tiny_run / 'merged'}: a promptbake export" in capsys.readouterr().out


def test_data_build_into_user_files_is_refused(tmp_path, refused, kept):
    out = user_dir(tmp_path / "mine")
    before = snapshot(out)
    err = refused(["data", "build", str(labels_spec(tmp_path)), f"output_dir={out}"])
    assert f"{out}: exists and holds files promptbake did not write (2 entries: notes.txt, sub/)" in err
    kept(out, before)


def test_data_build_of_another_spec_changes_nothing_in_the_existing_build(tmp_path, refused, kept):
    out = tmp_path / "data"
    cli(["data", "build", str(labels_spec(tmp_path, "first", out))])
    assert json.loads((out / MARKER).read_text())["kind"] == "dataset build"
    before = snapshot(out)
    # the labels backend generates nothing, so no journal check would have caught it: the manifest went first
    err = refused(["data", "build", str(labels_spec(tmp_path, "second", out))])
    assert f"{out}: holds a build of a different spec" in err
    kept(out, before)
    cli(["data", "build", str(labels_spec(tmp_path, "first", out))])  # the same spec again rebuilds in place
    assert (out / "manifest.json").is_file()


def test_data_merge_into_user_files_is_refused(tmp_path, refused, kept):
    spec = labels_spec(tmp_path)
    shards = [tmp_path / f"shard{i}" for i in (1, 2)]
    for i, shard in enumerate(shards, 1):
        cli(["data", "build", str(spec), f"shard={i}/2", f"output_dir={shard}"])
    out = user_dir(tmp_path / "mine")
    before = snapshot(out)
    err = refused(["data", "merge", str(out), *map(str, shards)])
    assert f"{out}: exists and holds files promptbake did not write" in err
    kept(out, before)


@pytest.mark.parametrize("method, saved", [("lora", "adapter"), ("full", "model")])
def test_training_into_an_adapter_dir_of_user_files_is_refused_before_it_trains(tmp_path, tiny_model_dir, method, saved,
                                                                                refused, kept):
    rows = tmp_path / "sft_train.jsonl"
    rows.write_text(json.dumps({"prompt": [{"role": "user", "content": "hi"}],
                                "completion": [{"role": "assistant", "content": "ok"}]}) + "\n")
    mine = user_dir(tmp_path / "run" / saved)
    before = snapshot(mine)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: {tiny_model_dir}\ndataset: {rows}\nmethod: {method}\noutput_dir: {tmp_path / 'run'}\n"
                      "report_to: none\n")
    err = refused(["train", "sft", str(recipe)])
    assert f"{mine}: exists and holds files promptbake did not write" in err
    kept(mine, before)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("command", ["bake", "demo"])
def test_bake_or_demo_into_a_directory_of_user_files_is_refused(tmp_path, command, refused, kept):
    out = user_dir(tmp_path / "mine")
    before = snapshot(out)
    argv = ["bake", str(labels_spec(tmp_path)), f"output_dir={out}"] if command == "bake" else \
        ["demo", "--out", str(out)]
    err = refused([*argv, "report_to=none"])
    assert f"{out} is not a bake's run directory (no bake.json) and holds 2 entries: notes.txt, sub/" in err
    kept(out, before)


# ---- what atomic_dir replaces --------------------------------------------------------------------------------


def test_atomic_dir_replaces_only_its_own_kind(tmp_path):
    with atomic_dir(tmp_path / "out", "adapter") as tmp:
        (tmp / "weights").write_text("1")
    with atomic_dir(tmp_path / "out", "adapter") as tmp:  # its own: replaced
        (tmp / "weights").write_text("2")
    assert (tmp_path / "out" / "weights").read_text() == "2"
    with pytest.raises(InputError, match="holds a promptbake adapter output, not a gguf one"):
        with atomic_dir(tmp_path / "out", "gguf"):
            pytest.fail("a directory of another kind was about to be replaced")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="exists and is a file"):
        with atomic_dir(tmp_path / "file", "adapter"):
            pass
    (tmp_path / "empty").mkdir()  # an empty directory holds nothing to lose
    with atomic_dir(tmp_path / "empty", "adapter") as tmp:
        (tmp / "weights").write_text("3")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "file", "out"]  # no temporaries left


def test_an_adapter_from_before_markers_is_still_replaced(tmp_path):
    """Runs started before promptbake marked its outputs resume: their adapters carry the run info file."""
    old = tmp_path / "best_adapter"
    old.mkdir()
    (old / "adapter_config.json").write_text("{}")
    (old / RUN_INFO_FILE).write_text("{}")
    from promptbake.core.models import is_run_output

    with atomic_dir(old, "adapter", legacy=is_run_output) as tmp:
        (tmp / RUN_INFO_FILE).write_text('{"step": 2}')
    assert json.loads((old / RUN_INFO_FILE).read_text()) == {"step": 2} and (old / MARKER).is_file()


def test_an_export_from_before_markers_needs_force_and_a_look_alike_is_the_users(tmp_path):
    from sft.export import is_legacy_export

    old = tmp_path / "merged"
    old.mkdir()
    (old / "config.json").write_text("{}")
    (old / "README.md").write_text("Produced by `promptbake export` from a `promptbake train` run\n")
    with pytest.raises(InputError, match=f"{old}: holds a promptbake export .*; --force replaces it"):
        check_output_dir(old, "export", force=False, legacy=is_legacy_export)
    (old / "README.md").write_text("# my model\n")
    with pytest.raises(InputError, match="holds files promptbake did not write"):
        check_output_dir(old, "export", force=True, legacy=is_legacy_export)


# ---- permissions -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_outputs_honour_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "bake.json", "{}")
        with atomic_dir(tmp_path / "merged", "export") as tmp:
            (tmp / "config.json").write_text("{}")
    finally:
        os.umask(old)
    assert (tmp_path / "bake.json").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "merged").stat().st_mode & 0o777 == 0o777 & ~umask
    assert (tmp_path / "merged" / MARKER).stat().st_mode & 0o777 == 0o666 & ~umask


# ---- paths are paths ------------------------------------------------------------------------------------------


@pytest.fixture
def offline_hub(monkeypatch):
    """No hub: every reference that is not local must be refused by the check itself, without retries."""
    from promptbake.core.models import hub_problem

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_problem.cache_clear()
    yield
    hub_problem.cache_clear()


@pytest.fixture
def eval_config(tmp_path, tiny_model_dir) -> Path:
    (tmp_path / "eval_inputs.jsonl").write_text(json.dumps({"prompt": [{"role": "user", "content": "hi"}]}) + "\n")
    path = tmp_path / "e.yaml"
    path.write_text(f"spec: {labels_spec(tmp_path)}\neval_inputs: {tmp_path / 'eval_inputs.jsonl'}\n"
                    f"base_model: {tiny_model_dir}\ntuned_model: {tiny_model_dir}\nreport_to: none\n"
                    f"output_dir: {tmp_path / 'eval'}\n")
    return path


@pytest.mark.parametrize("override, message", [
    ("tuned_model=runs/nonexistent/adapter", "e.yaml:4: field 'tuned_model': 'runs/nonexistent/adapter': no such "
                                             "directory or file"),
    ("tuned_model=./adapter", "field 'tuned_model': './adapter': no such directory or file"),
    ("tuned_model=~/no-such-adapter", "field 'tuned_model': '~/no-such-adapter': no such directory or file"),
    ("tuned_model=a/b/c", "field 'tuned_model': 'a/b/c': no such directory or file"),
    ("tuned_model=nosuch", "field 'tuned_model': 'nosuch': no such directory or file"),
    ("tuned_model=nosuch/adapter", "field 'tuned_model': 'nosuch/adapter': no such local directory, and "
                                   "HF_HUB_OFFLINE is set"),
    ("base_model=nosuch/model", "e.yaml:3: field 'base_model': 'nosuch/model': no such local directory"),
    ("tuned_model=TMP", "field 'tuned_model': 'TMP': directory has no config.json or adapter_config.json"),
])
def test_eval_model_paths_are_refused_at_validation(eval_config, tmp_path, override, message, offline_hub, refused):
    override, message = override.replace("TMP", str(tmp_path)), message.replace("TMP", str(tmp_path))
    err = refused(["eval", str(eval_config), override])
    assert message in err
    assert not (tmp_path / "eval").exists()


def test_a_side_served_by_an_endpoint_is_not_checked(eval_config, offline_hub):
    from evals.run import EvalConfig
    from promptbake.core.config import load_config

    config = load_config(EvalConfig, eval_config, ["tuned_model=nosuch/served",
                                                   "tuned_endpoint={base_url: 'http://127.0.0.1:9/v1', model: m}"])
    assert config.tuned_model == "nosuch/served"


def test_bake_and_train_model_paths_are_refused_before_any_stage(tmp_path, offline_hub, refused):
    spec = labels_spec(tmp_path)
    err = refused(["bake", str(spec), "model=nosuch/model", f"output_dir={tmp_path / 'bake'}"])
    assert "bake overrides: field 'model': 'nosuch/model': no such local directory, and HF_HUB_OFFLINE is set" in err
    assert not (tmp_path / "bake").exists()  # not after its data stage: before anything
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: runs/nosuch/model\ndataset: d.jsonl\n")
    err = refused(["train", "sft", str(recipe)])
    assert f"{recipe}:1: field 'model': 'runs/nosuch/model': no such directory or file" in err


def test_an_unreachable_hub_is_one_clear_error_not_retries(monkeypatch, tmp_path):
    import huggingface_hub

    from promptbake.core.models import check_model_ref, hub_problem

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    hub_problem.cache_clear()
    start = time.perf_counter()
    with pytest.raises(InputError, match=r"tuned_model 'nosuch/adapter': no such local directory, and the Hugging "
                                         r"Face hub is unreachable \(ConnectError"):
        check_model_ref("nosuch/adapter", "tuned_model")
    assert time.perf_counter() - start < 3
    hub_problem.cache_clear()


def test_the_default_model_and_local_models_pass(tiny_model_dir, offline_hub):
    from promptbake.core.config import DEFAULT_MODEL
    from promptbake.core.models import check_model_ref, embedded_gguf_path

    assert check_model_ref(DEFAULT_MODEL, "model") == DEFAULT_MODEL
    assert check_model_ref(str(tiny_model_dir), "model") == str(tiny_model_dir)
    assert check_model_ref(str(embedded_gguf_path(DEFAULT_MODEL)), "model")


def test_export_of_a_missing_run_is_refused(tmp_path, refused):
    err = refused(["export", str(tmp_path / "runs" / "nope")])
    assert f"{tmp_path / 'runs' / 'nope'}: no such directory" in err


# ---- spec sanity -----------------------------------------------------------------------------------------------


def test_duplicate_rule_ids_name_the_line_of_the_second(tmp_path, refused):
    spec = labels_spec(tmp_path)
    spec.write_text(spec.read_text().replace("inputs:\n", "  - id: other\n    text: Be brief.\n"
                                                          "  - id: lower\n    text: Again.\ninputs:\n"))
    err = refused(["data", "build", str(spec)])
    assert f"{spec}:8: field 'rules.2.id': rule ids must be unique; repeated: ['lower'] (first in rules.0)" in err


def test_a_rule_without_a_check_is_warned_about_with_its_line(tmp_path, caplog):
    from data_tools.spec import load_spec

    spec = labels_spec(tmp_path)
    spec.write_text(spec.read_text().replace("inputs:\n", "  - id: polite\n    text: Be polite.\ninputs:\n"))
    with caplog.at_level("WARNING", logger="data_tools.spec"):
        load_spec(spec)
        load_spec(spec)  # loaded twice in one command (the bake does): warned once
    warnings = [r.getMessage() for r in caplog.records if "has no check" in r.getMessage()]
    assert warnings == [f"{spec}:6: rule 'polite' has no check: it is prompted but never scored (no pass rate; it "
                        "rejects no answer)"]


def test_a_killed_writes_temporary_directory_is_removed_by_the_next_write(tmp_path):
    """A SIGKILL mid-write leaves `.NAME.xxxx` behind; the next write of that output removes it, and only it:
    a look-alike directory without promptbake's in-progress marker is the user's and stays."""
    from promptbake.core.io import mark_output

    stale = tmp_path / ".adapter.k1ll3d"
    stale.mkdir()
    mark_output(stale, "adapter", {"in_progress": True})
    (stale / "adapter_model.safetensors").write_bytes(b"half")
    users = tmp_path / ".adapter.mine"
    users.mkdir()
    (users / "notes.txt").write_text("keep")
    with atomic_dir(tmp_path / "adapter", "adapter") as tmp:
        (tmp / "adapter_config.json").write_text("{}")
    assert not stale.exists() and (users / "notes.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".adapter.mine", "adapter"]
    assert "in_progress" not in json.loads((tmp_path / "adapter" / MARKER).read_text())
