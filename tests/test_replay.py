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
from promptbake.replay import REPLAY_QUESTIONS, ReplaySpec, build_replay, replay_questions, spread


def lines(path: Path) -> list[dict]:
    return [json.loads(t) for t in path.read_text().splitlines() if t.strip()]


@pytest.fixture(scope="module")
def ok_model_dir(tmp_path_factory) -> Path:
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
    ok = tokenizer("ok", add_special_tokens=False)["input_ids"]
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
    out = tmp_path_factory.mktemp("ok-model")
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
    assert len(questions) == 40 and {q.kind for q in questions} == {"fact", "arithmetic"}


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
