"""Replay rows (promptbake/replay.py): the base's own answers to general questions, mixed into the bake's SFT rows.

The base here is a real Llama of SmolLM2's shape whose weights are set so that its greedy answer to anything is
"ok": every token but one embeds to the same direction, the attention and MLP outputs are zero (the residual stream
is the current token's embedding), and the LM head maps that direction to the token "ok" and the embedding of
"ok" to EOS. A random tiny model never stops within a token limit; this one stops after one token, as a real
base answering a short question does.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_bake import FAST

from evals.general_questions import GENERAL_QUESTIONS
from promptbake.bake import load_bake
from promptbake.bake import main as bake
from promptbake.core.config import InputError
from promptbake.core.layout import DatasetLayout
from promptbake.replay import REPLAY_QUESTIONS, ReplaySpec, build_replay, choose, replay_questions, spread


def lines(path: Path) -> list[dict]:
    return [json.loads(t) for t in path.read_text().splitlines() if t.strip()]


@pytest.fixture(scope="module")
def ok_model_dir(tmp_path_factory) -> Path:
    return answering_model("ok", tmp_path_factory.mktemp("ok-model"))


@pytest.fixture(scope="module")
def eight_model_dir(tmp_path_factory) -> Path:
    """The same construction answering "8" to anything: right on the two drift guard questions whose answer is 8."""
    return answering_model("8", tmp_path_factory.mktemp("eight-model"))


def answering_model(word: str, out: Path) -> Path:
    """A real Llama of SmolLM2's shape whose greedy answer to anything is `word` (one token), then EOS."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from promptbake.core.models import DEFAULT_MODEL, load_tokenizer

    tokenizer = load_tokenizer(DEFAULT_MODEL)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    ok = tokenizer(word, add_special_tokens=False)["input_ids"]
    assert len(ok) == 1
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embed = model.model.embed_tokens.weight
        embed.zero_()
        embed[:, 0] = 1.0
        embed[ok[0]] = 0.0
        embed[ok[0], 1] = 1.0
        head = model.lm_head.weight
        head.zero_()
        head[ok[0], 0] = 10.0
        head[tokenizer.eos_token_id, 1] = 10.0
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def spec_rows(n: int) -> list[dict]:
    return [{"prompt": [{"role": "user", "content": f"q{i}"}], "completion": [{"role": "assistant", "content": "a"}]}
            for i in range(n)]


def test_replay_rows_are_spread_evenly_and_keep_both_orders():
    rows, extra = spec_rows(8), [{"replay": i} for i in range(4)]
    mixed = spread(rows, extra)
    assert len(mixed) == 12 and [r for r in mixed if "replay" not in r] == rows
    assert [r for r in mixed if "replay" in r] == extra
    positions = [i for i, r in enumerate(mixed) if "replay" in r]
    assert positions == [1, 4, 7, 10]  # one in every three, none bunched at an end
    assert spread(rows, []) == rows and spread([], extra) == extra


def test_shipped_replay_questions_are_none_of_the_drift_arms():
    from evals.drift import read_questions

    asked = [q.question for q in read_questions(str(GENERAL_QUESTIONS))]
    questions = replay_questions(str(REPLAY_QUESTIONS), asked)
    assert len(questions) == 164 and {q.kind for q in questions} == {"fact", "arithmetic"}


def test_a_replay_question_the_drift_arm_asks_is_refused_by_name(tmp_path):
    path = tmp_path / "replay.jsonl"
    path.write_text('{"id": "r1", "kind": "fact", "question": "What is 2 plus 2?", "answer": "4"}\n'
                    '{"id": "r2", "kind": "fact", "question": "What is the capital of France?", "answer": "Paris"}\n')
    with pytest.raises(InputError, match=r"question 'r2' \('What is the capital of France\?'\) is one the eval's "
                                         "drift arm asks"):
        replay_questions(str(path), ["what is the capital of france?"])
    path.write_text('{"id": "r1", "kind": "fact", "question": "What is 2 plus 2?"}\n')
    with pytest.raises(InputError, match=r"replay.jsonl:1"):  # a fact without its answer: file and line named
        replay_questions(str(path), [])


def test_build_replay_mixes_the_bases_finished_answers_and_drops_cut_ones(ok_model_dir, tmp_path):
    data = DatasetLayout(tmp_path / "data")
    data.root.mkdir()
    data.sft_train.write_text("".join(json.dumps(r) + "\n" for r in spec_rows(12)))
    out = tmp_path / "replay"
    record = build_replay(ReplaySpec(fraction=0.5), str(ok_model_dir), data, out, [], batch_size=8)
    replay = lines(out / "replay_rows.jsonl")
    assert record["replay_rows"] == len(replay) == 6 and record["spec_rows"] == 12 and record["dropped_unfinished"] == 0
    questions = [q.question for q in replay_questions(str(REPLAY_QUESTIONS), [])][:6]
    assert [r["prompt"][0]["content"] for r in replay] == questions
    assert {r["completion"][0]["content"] for r in replay} == {"ok"}  # the base's own greedy answer, no prompt
    mixed = lines(out / "sft_train.jsonl")
    assert len(mixed) == 18 and [r for r in mixed if r not in replay] == spec_rows(12)
    assert data.sft_train.read_text().count("\n") == 12  # the data build is left as it was
    # an answer that reaches the token limit is cut off, not finished: dropped, and counted
    record = build_replay(ReplaySpec(fraction=0.5, max_new_tokens=1), str(ok_model_dir), data, tmp_path / "cut", [],
                          batch_size=8)
    assert record["replay_rows"] == 0 and record["dropped_unfinished"] == 6
    assert lines(tmp_path / "cut" / "sft_train.jsonl") == spec_rows(12)


def test_repaired_replay_puts_the_bases_answers_in_the_specs_form_and_drops_what_no_repair_passes(ok_model_dir,
                                                                                                    tmp_path):
    from data_tools.spec import Rule

    data = DatasetLayout(tmp_path / "data")
    data.root.mkdir()
    data.sft_train.write_text("".join(json.dumps(r) + "\n" for r in spec_rows(8)))
    style = [Rule(id="prefix", text="start with 'sure:'", check={"kind": "starts_with", "prefix": "sure:"}),
             Rule(id="short", text="at most 5 words", check={"kind": "max_words", "n": 5})]
    record = build_replay(ReplaySpec(fraction=0.5, repair=True), str(ok_model_dir), data, tmp_path / "style", [],
                          batch_size=8, rules=style)
    replay = lines(tmp_path / "style" / "replay_rows.jsonl")
    assert {r["completion"][0]["content"] for r in replay} == {"sure: ok"}  # the base's "ok", in the spec's form
    assert record["replay_rows"] == 4 and record["repaired"] == 4 and record["dropped_unrepairable"] == 0
    # a check no repair satisfies (a label general questions do not have): every answer dropped, and counted
    labelled = [*style, Rule(id="exact", text="the label", check={"kind": "label_match"})]
    record = build_replay(ReplaySpec(fraction=0.5, repair=True), str(ok_model_dir), data, tmp_path / "labelled", [],
                          batch_size=8, rules=labelled)
    assert record["replay_rows"] == 0 and record["dropped_unrepairable"] == 4
    assert lines(tmp_path / "labelled" / "sft_train.jsonl") == spec_rows(8)
    # without repair the answers stay the base's own
    record = build_replay(ReplaySpec(fraction=0.5), str(ok_model_dir), data, tmp_path / "plain", [], batch_size=8,
                          rules=style)
    assert {r["completion"][0]["content"] for r in lines(tmp_path / "plain" / "replay_rows.jsonl")} == {"ok"}
    assert "repaired" not in record
    with pytest.raises(ValueError, match="loss: kl"):
        ReplaySpec(fraction=0.5, repair=True, loss="kl")


def test_bake_with_replay_trains_on_the_mixed_rows_and_counts_them(ok_model_dir, tiny_model_dir, tmp_path):
    from conftest import TINY_SPEC

    spec = tmp_path / "spec.yaml"
    spec.write_text(TINY_SPEC.format(model=tiny_model_dir, out=tmp_path / "data"))
    out = tmp_path / "bake"
    config, spec_overrides = load_bake(str(spec), [*FAST, f"model={ok_model_dir}", f"output_dir={out}",
                                                   "inference_arms=false", "replay.fraction=1.0",
                                                   "budget.min_steps=1", "budget.max_steps=40"])
    result = bake(config, spec_overrides)
    state = json.loads((out / "bake.json").read_text())
    assert list(state["stages"]) == ["data", "replay", "sft", "eval"]
    assert state["plan"]["replay_fraction"] == 1.0
    spec_count = json.loads((out / "data" / "manifest.json").read_text())["counts"]["sft_rows"]
    replay = state["stages"]["replay"]
    assert replay["spec_rows"] == spec_count and replay["replay_rows"] == spec_count  # one per spec row
    assert len(lines(out / "replay" / "sft_train.jsonl")) == 2 * spec_count
    # the budget counts the replay rows (8 epochs of 2 x rows at batch 8), the trainer read the mixed dataset
    assert state["stages"]["sft"]["budget_steps"] == -(-8 * 2 * spec_count // 8)
    info = json.loads((Path(state["stages"]["sft"]["tuned_model"]) / "promptbake_run.json").read_text())
    assert info["dataset"] == str(out / "replay")
    assert result["provenance"]["replay"] == spec_count
    assert "replay " + str(spec_count) in (out / "report.md").read_text()


def test_choose_replay_only_when_sft_drifts_and_replay_keeps_more_for_at_most_the_inputs_lost():
    sft = {"kept": 0.5, "passing": 10}
    assert choose({"kept": 0.9, "passing": 10}, None, 0.9, 1)[0] == "sft"  # the goal, exactly: no replay
    assert "goal 90%" in choose({"kept": 0.95, "passing": 10}, None, 0.9, 1)[1]
    assert choose({"kept": None, "passing": 10}, None, 0.9, 1) == (
        "sft", "the base answers none of the drift guard's questions right: nothing for replay to keep")
    assert choose(sft, {"kept": 0.8, "passing": 9}, 0.9, 1) == (
        "replay", "replay keeps more general answers (50% -> 80% of the base's correct general answers; 10 -> 9 "
                  "validation inputs passing every rule)")
    assert choose(sft, {"kept": 0.8, "passing": 8}, 0.9, 1)[1].startswith("replay loses rules (10 -> 8")
    assert choose(sft, {"kept": 0.8, "passing": 8}, 0.9, 2)[0] == "replay"
    assert choose(sft, {"kept": 0.5, "passing": 12}, 0.9, 1)[1].startswith("replay keeps no more general answers")
    assert choose(sft, {"kept": 0.6, "passing": 12}, 0.9, 0)[0] == "replay"


RECIPE = Path(__file__).resolve().parents[1] / "configs" / "sft" / "bake_lora.yaml"


def test_bake_trains_replay_only_when_sft_drifts_and_keeps_the_adapter_choose_prefers(eight_model_dir,
                                                                                     tiny_model_dir, tmp_path):
    """The base answers "8" to anything: right on the two drift guard questions whose answer is 8. SFT on the tiny
    spec's rows alone moves it off that answer; SFT again with the base's own answers mixed in keeps it. The stage
    (real decodes, real training) trains replay, keeps it, and everything after it (eval, provenance, report)
    reads the replay adapter."""
    from conftest import TINY_SPEC

    spec = tmp_path / "spec.yaml"
    spec.write_text(TINY_SPEC.format(model=tiny_model_dir, out=tmp_path / "data"))
    out = tmp_path / "bake"
    # a rate that moves this model's one confident answer within the 30 steps (the shipped recipe's 3e-4 does not)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.read_text().replace("learning_rate: 3.0e-4", "learning_rate: 1.0e-2"))
    overrides = [*FAST, f"model={eight_model_dir}", f"output_dir={out}", "inference_arms=false", f"recipe={recipe}",
                 "replay.fraction=2.0", "replay.when=sft_drifts", "replay.inputs_lost=99",
                 # no validation slice (SFT's step 0, the base itself, would be kept): the last step is
                 "validation.min_inputs=1000", "budget.min_steps=30", "budget.max_steps=30"]
    # a finished bake without replay first (as scripts/bench_methods.py forks one): turning replay on with
    # `sft_drifts` affects only the stages after SFT; its stage and adapter stay as they were
    bake(*load_bake(str(spec), [o for o in overrides if not o.startswith("replay.")]))
    sft_stage = json.loads((out / "bake.json").read_text())["stages"]["sft"]
    adapter = out / "sft" / "adapter" / "adapter_model.safetensors"
    mtime = adapter.stat().st_mtime_ns
    result = bake(*load_bake(str(spec), overrides))
    state = json.loads((out / "bake.json").read_text())
    assert list(state["stages"]) == ["data", "sft", "replay_choice", "eval"]
    assert state["stages"]["sft"] == sft_stage and adapter.stat().st_mtime_ns == mtime
    assert state["plan"]["replay_when"] == "sft_drifts"
    choice = state["stages"]["replay_choice"]
    assert choice["sft_guard"]["base_correct"] == 2 and choice["sft_guard"]["kept"] < 0.9
    assert choice["replay_guard"]["kept"] > choice["sft_guard"]["kept"] and choice["chosen"] == "replay"
    assert choice["sft"]["tuned_model"] == str(out / "replay_choice" / "sft" / "adapter")  # its last step
    spec_count = json.loads((out / "data" / "manifest.json").read_text())["counts"]["sft_rows"]
    assert choice["replay"]["replay_rows"] == 2 * spec_count == result["provenance"]["replay"]  # two per spec row
    assert len(lines(out / "replay_choice" / "rows" / "sft_train.jsonl")) == 3 * spec_count
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["tuned_unprompted"]["model"] == choice["sft"]["tuned_model"]
    assert "**Replay choice:** replay rows kept: replay keeps more general answers" in (out / "report.md").read_text()


def test_bake_trains_no_replay_when_sft_keeps_the_goal(eight_model_dir, tiny_model_dir, tmp_path):
    """The shipped recipe's rate leaves this base's one answer alone in 30 steps: SFT keeps both correct general
    answers, so no replay row is written and no second SFT trains (the cost `sft_drifts` saves)."""
    from conftest import TINY_SPEC

    spec = tmp_path / "spec.yaml"
    spec.write_text(TINY_SPEC.format(model=tiny_model_dir, out=tmp_path / "data"))
    out = tmp_path / "bake"
    bake(*load_bake(str(spec), [*FAST, f"model={eight_model_dir}", f"output_dir={out}", "inference_arms=false",
                                "replay.fraction=2.0", "replay.when=sft_drifts", "validation.min_inputs=1000",
                                "budget.min_steps=30", "budget.max_steps=30"]))
    choice = json.loads((out / "bake.json").read_text())["stages"]["replay_choice"]
    assert choice["sft_guard"] == {"kept": 1.0, "base_correct": 2, "passing": 0}
    assert choice["chosen"] == "sft" and choice["replay"] is None and choice["replay_guard"] is None
    assert choice["why"] == "SFT keeps 100% of the base's correct general answers (goal 90%)"
    assert not (out / "replay_choice" / "rows").exists() and not (out / "replay_choice" / "sft").exists()


def test_bake_with_replay_as_a_kl_term_trains_the_spec_rows_alone_beside_it(ok_model_dir, tiny_model_dir, tmp_path):
    """`replay.loss=kl`: the replay rows are built as before but not mixed in: SFT trains on the spec's rows (and its
    budget counts them alone) with the KL to the base on the replay rows logged beside its loss."""
    from conftest import TINY_SPEC

    spec = tmp_path / "spec.yaml"
    spec.write_text(TINY_SPEC.format(model=tiny_model_dir, out=tmp_path / "data"))
    out = tmp_path / "bake"
    config, spec_overrides = load_bake(str(spec), [*FAST, f"model={ok_model_dir}", f"output_dir={out}",
                                                   "inference_arms=false", "replay.fraction=1.0", "replay.loss=kl",
                                                   "budget.min_steps=1", "budget.max_steps=40"])
    result = bake(config, spec_overrides)
    state = json.loads((out / "bake.json").read_text())
    assert list(state["stages"]) == ["data", "replay", "sft", "eval"]
    spec_count = json.loads((out / "data" / "manifest.json").read_text())["counts"]["sft_rows"]
    assert state["stages"]["replay"]["replay_rows"] == spec_count
    assert state["stages"]["sft"]["budget_steps"] == -(-8 * spec_count // 8)  # 8 epochs of the spec rows alone
    info = json.loads((Path(state["stages"]["sft"]["tuned_model"]) / "promptbake_run.json").read_text())
    assert info["dataset"] == str(out / "data")
    logged = [h for state_file in (out / "sft" / "checkpoints").glob("checkpoint-*/trainer_state.json")
              for h in json.loads(state_file.read_text())["log_history"]]
    assert any("retention_kl" in h for h in logged), logged
    assert result["provenance"]["replay_as_kl_term"] == spec_count and "replay" not in result["provenance"]
    assert "replay as kl term " + str(spec_count) in (out / "report.md").read_text()


def test_replay_as_a_kl_term_needs_an_adapter(tiny_model_dir, tmp_path):
    from conftest import TINY_SPEC

    spec = tmp_path / "spec.yaml"
    spec.write_text(TINY_SPEC.format(model=tiny_model_dir, out=tmp_path / "data"))
    recipe = tmp_path / "full.yaml"
    recipe.write_text("method: full\ndataset: set-by-the-bake\n")
    config, spec_overrides = load_bake(str(spec), [*FAST, f"output_dir={tmp_path / 'bake'}", f"recipe={recipe}",
                                                   "replay.fraction=1.0", "replay.loss=kl"])
    with pytest.raises(InputError, match=r"replay.loss=kl holds the model to its base.*full.yaml.*method: full"):
        bake(config, spec_overrides)
    assert not (tmp_path / "bake").exists()
