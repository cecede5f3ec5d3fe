"""`promptbake export RUN --gguf TYPE` / `--gguf-adapter`: llama.cpp's own converter and quantizer, checked by
serving the files with the real llama.cpp server on loopback and comparing its greedy answers to the merged
safetensors model's.

The run is a tiny model of SmolLM2's architecture with SmolLM2's tokenizer (the converter checks the tokenizer)
and a LoRA trained here for a few seconds to answer "Tell me about X." with "ok: X are nice". Not conftest's
tiny model: its embeddings (std 0.02, tied to the LM head) cap every logit near zero, so its greedy tokens are
near ties that any f16 rounding flips; with std 0.5 the trained model's choices have margins, as a real model's
mostly do, and identical answers measure the conversion rather than noise. The LoRA changes the answers (the
base's share is asserted low), so answers identical to the merged model's also show the adapter is in the GGUF.
"""

from __future__ import annotations

import json
import random
import shutil
from difflib import SequenceMatcher
from pathlib import Path

import pytest
from gguf import GGUFReader
from llama_server import chat, serve_gguf
from test_crash_safety import kill_when, start

from data_tools.scoring import all_pass, score
from data_tools.spec import Sampling, load_spec
from promptbake.core.config import InputError
from promptbake.core.io import MARKER
from promptbake.core.models import DEFAULT_MODEL, RUN_INFO_FILE, load_tokenizer
from sft import gguf as gguf_export
from sft.export import main as export

TRAIN_THINGS = ["cats", "dogs", "rain", "snow", "tea", "bread", "maps", "ships", "stars", "trees", "books", "rivers",
                "clouds", "birds", "lamps", "coins"]
HELD_OUT = [f"Tell me about {t}." for t in ("owls", "kites", "hills", "boats", "roses", "bells", "caves", "drums",
                                              "ponds", "seeds", "tents", "wolves", "forks", "gloves", "waves", "bees")]
MAX_TOKENS = 10


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A training run as `promptbake train` leaves it (adapter/ + promptbake_run.json) on a tiny base."""
    return make_run(tmp_path_factory.mktemp("gguf-run"), hidden_size=32)


def make_run(root: Path, hidden_size: int) -> Path:
    """A tiny base of `hidden_size` in `root/base` and a LoRA trained on it in `root/run` (returned)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = load_tokenizer(DEFAULT_MODEL)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True, initializer_range=0.5,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    base = LlamaForCausalLM(config)
    base.save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", lora_dropout=0.0))
    rows, answer_masks = [], []
    for thing in TRAIN_THINGS:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": f"Tell me about {thing}."}],
                                               tokenize=False, add_generation_prompt=True)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(f"ok: {thing} are nice<|im_end|>", add_special_tokens=False)["input_ids"]
        rows.append(prompt_ids + answer_ids)
        answer_masks.append([False] * len(prompt_ids) + [True] * len(answer_ids))
    width = max(map(len, rows))
    ids = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows])
    attention = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    targets = torch.tensor([m + [False] * (width - len(m)) for m in answer_masks])[:, 1:]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-2)
    inner = model.base_model.model
    for _ in range(100):
        # the LM head only at answer positions: the 49k-token head over every position would dominate the step
        hidden = inner.model(input_ids=ids, attention_mask=attention).last_hidden_state[:, :-1]
        loss = torch.nn.functional.cross_entropy(inner.lm_head(hidden[targets]), ids[:, 1:][targets])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    run = root / "run"
    model.save_pretrained(run / "adapter")
    tokenizer.save_pretrained(run / "adapter")
    (run / "adapter" / RUN_INFO_FILE).write_text(json.dumps({"base_model": str(root / "base"), "method": "lora"}))
    return run


def local_answers(model_dir: Path) -> list[str]:
    from data_tools.backends import LocalBackend

    completions = LocalBackend.from_name(str(model_dir), batch_size=16).generate(
        [[{"role": "user", "content": q}] for q in HELD_OUT], Sampling(max_new_tokens=MAX_TOKENS))
    return [c.texts[0] for c in completions]


def served_answers(gguf: Path, log_dir: Path, *server_args: str) -> list[str]:
    # repeat_penalty 1.0: llama-cpp-python's server applies 1.1 unless asked, and greedy must be plain argmax
    with serve_gguf(gguf, log_dir, *server_args) as url:
        return [chat(url, [{"role": "user", "content": q}], MAX_TOKENS, temperature=0.0, repeat_penalty=1.0)
                for q in HELD_OUT]


def identical(a: list[str], b: list[str]) -> float:
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a)


def similarity(a: list[str], b: list[str]) -> float:
    """Mean character-level similarity (difflib's ratio) of paired answers: 1.0 identical, ~0.1 unrelated."""
    return sum(SequenceMatcher(None, x, y).ratio() for x, y in zip(a, b, strict=True)) / len(a)


SAME_ANSWERS = 0.85
"""At most one of the 8 held-out answers may differ from the merged fp32 model's: a tiny random model has
near-tied next-token logits, and f16 weights (or a LoRA applied by llama.cpp in another order) can flip one, more
often on some CPUs than others (7 of 8 on an AVX-512 Xeon, 8 of 8 on an AMD EPYC, same code). The base model
without the adapter agrees on fewer than half, so 7 of 8 still shows the export carries the adapter."""


def adherence(spec, answers: list[str]) -> float:
    """All-rules adherence, scored by the spec's checks exactly as `promptbake eval` scores an arm."""
    return sum(all_pass(score(spec.rules, q, a, None)) for q, a in zip(HELD_OUT, answers, strict=True)) / len(answers)


@pytest.mark.slow
def test_f16_and_q8_0_gguf_served_by_llama_cpp_answer_like_the_merged_model(tiny_run, tiny_spec, tmp_path):
    spec = load_spec(tiny_spec)  # its rules: lowercase, no commas, at most 6 words, starts with "ok:"
    gguf_dir = export(tiny_run, gguf="f16")
    assert gguf_dir == tiny_run / "gguf"
    export(tiny_run, gguf="q8_0")
    merged = tiny_run / "merged"
    reference = local_answers(merged)
    base = local_answers(tiny_run.parent / "base")
    assert identical(base, reference) < 0.5  # the adapter changes the answers: agreement below is not the base's
    assert adherence(spec, reference) >= 0.5 > adherence(spec, base)

    f16 = served_answers(gguf_dir / "f16" / "model-f16.gguf", tmp_path)
    assert identical(f16, reference) >= SAME_ANSWERS, list(zip(reference, f16))
    assert abs(adherence(spec, f16) - adherence(spec, reference)) <= 0.05
    q8_0 = served_answers(gguf_dir / "q8_0" / "model-q8_0.gguf", tmp_path)
    # 8-bit blocks of a 32-wide random model lose more than a real model's do: on an AVX-512 Xeon the q8_0 answers
    # kept the adapter's "ok: ... are nice" frame but swapped words ("ok: Aff are nice" for "ok: books are nice":
    # 7 of 16 identical), on an AMD EPYC within 10 points of adherence. What must survive quantization is the tuned
    # behaviour: q8_0's answers read like the merged model's, far more than the base's do
    assert similarity(q8_0, reference) >= 0.7 > 0.3 >= similarity(base, reference), list(zip(reference, q8_0))
    # every weight matrix is of the type asked for (the 1-d norm weights stay f32, as llama.cpp keeps them)
    for quant, matrix_type in (("f16", "F16"), ("q8_0", "Q8_0")):
        tensors = GGUFReader(gguf_dir / quant / f"model-{quant}.gguf").tensors
        assert {t.tensor_type.name for t in tensors if len(t.shape) == 2} == {matrix_type}
    # nothing but the finished files: no temporary directory or f16 intermediate left behind
    assert sorted(p.name for p in gguf_dir.iterdir()) == ["f16", "q8_0"]
    assert sorted(p.name for p in (gguf_dir / "q8_0").iterdir()) == [MARKER, "Modelfile", "model-q8_0.gguf"]


@pytest.mark.slow
def test_q4_k_m_is_llama_cpps_k_quant_mix_and_keeps_the_tuned_answers(tmp_path_factory, tmp_path):
    # k-quants pack rows in blocks of 256 values: a 32-wide model would get only fallback types, so this run is
    # 256 wide (its 49k x 256 embedding makes it ~13M parameters, converted in seconds)
    run = make_run(tmp_path_factory.mktemp("gguf-run-256"), hidden_size=256)
    gguf_dir = export(run, gguf="q4_k_m")
    model = gguf_dir / "q4_k_m" / "model-q4_k_m.gguf"
    types = [t.tensor_type.name for t in GGUFReader(model).tensors if len(t.shape) == 2]
    # Q4_K_M is llama.cpp's mix: Q4_K for most matrices, Q6_K for the sensitive ones (half the attention value
    # and FFN down projections, the output/embedding matrix)
    assert set(types) == {"Q4_K", "Q6_K"}, types
    assert types.count("Q4_K") > types.count("Q6_K")
    assert model.stat().st_size < 0.4 * (run / "merged" / "model.safetensors").stat().st_size
    reference = local_answers(run / "merged")
    base = local_answers(run.parent / "base")
    assert identical(base, reference) < 0.5
    q4 = served_answers(model, tmp_path)
    # 4-bit weights of a random model flip more near-tied tokens than q8_0 does ("ok: snow bread are..." for "ok:
    # snow are nice": similarity 0.64 on an AMD EPYC, the base's 0.16); the tuned frame must survive
    assert similarity(q4, reference) >= 0.5 > 0.3 >= similarity(base, reference), list(zip(reference, q4))
    assert sorted(p.name for p in (gguf_dir / "q4_k_m").iterdir()) == [MARKER, "Modelfile", "model-q4_k_m.gguf"]


@pytest.mark.slow
def test_adapter_gguf_on_the_base_gguf_answers_like_the_merged_model(tiny_run, tmp_path):
    gguf_dir = export(tiny_run, gguf_adapter=True)
    adapter = gguf_dir / "adapter" / "adapter-f16.gguf"
    assert adapter.is_file()
    base_gguf = gguf_export.export_model(tiny_run.parent / "base", tmp_path / "base-gguf", "f16")
    reference = local_answers(export(tiny_run))  # export without --gguf: the merged safetensors, as before
    with_lora = served_answers(base_gguf, tmp_path, "--lora_path", str(adapter))
    assert identical(with_lora, reference) >= SAME_ANSWERS, list(zip(reference, with_lora))
    assert identical(served_answers(base_gguf, tmp_path), reference) < 0.5  # the adapter is what makes them agree


@pytest.mark.slow
def test_gguf_export_killed_midway_leaves_nothing_under_a_final_name(tiny_run, tmp_path, reliability_log):
    run = tmp_path / "run"
    shutil.copytree(tiny_run / "adapter", run / "adapter")  # a run of its own: its gguf/ may hold a killed temp dir
    final = run / "gguf" / "q8_0"

    def writing() -> bool:  # conversion or quantization under the temporary name has begun
        return (run / "gguf").is_dir() and any(p.name.startswith(".q8_0.") for p in (run / "gguf").iterdir())

    rng = random.Random(5)
    kills = 0
    for _ in range(2):
        kills += kill_when(start(["export", str(run), "--gguf", "q8_0"]), writing, rng.uniform(0, 2))
        assert not final.exists() or sorted(p.name for p in final.iterdir()) == [MARKER, "Modelfile",
                                                                                 "model-q8_0.gguf"]
    assert kills >= 1, "no kill landed mid-export; the test proved nothing"
    reliability_log("faults_injected", kills)
    export(run, gguf="q8_0")  # started again, it finishes
    assert {t.tensor_type.name for t in GGUFReader(final / "model-q8_0.gguf").tensors if len(t.shape) == 2} == {"Q8_0"}


def test_modelfile_carries_the_chatml_template_default_system_prompt_and_stop_tokens(tiny_model_dir, tmp_path):
    text = gguf_export.modelfile(tiny_model_dir, "model-f16.gguf")
    lines = text.splitlines()
    assert "FROM ./model-f16.gguf" in lines
    assert f'TEMPLATE """{gguf_export.CHATML_OLLAMA}"""' in text
    # SmolLM2's template inserts this system prompt when a conversation has none: the model was tuned with it
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""' in lines
    assert [line for line in lines if line.startswith("PARAMETER stop")] == [
        'PARAMETER stop "<|im_end|>"', 'PARAMETER stop "<|im_start|>"']


def test_modelfile_of_a_template_that_is_not_chatml_has_no_template(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = ("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
                               "{% if add_generation_prompt %}[assistant] {% endif %}")
    tokenizer.save_pretrained(tmp_path)
    text = gguf_export.modelfile(tmp_path, "model-f16.gguf")
    assert "TEMPLATE" not in text.replace("no TEMPLATE", "") and "SYSTEM" not in text
    assert 'PARAMETER stop "<|im_end|>"' in text  # the tokenizer's EOS still stops generation


@pytest.fixture(scope="module")
def opt_model(tmp_path_factory) -> Path:
    """A model whose architecture (OPTForCausalLM) llama.cpp's converter has no class for."""
    from transformers import OPTConfig, OPTForCausalLM

    out = tmp_path_factory.mktemp("opt") / "merged"
    OPTForCausalLM(OPTConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2,
                             word_embed_proj_dim=16, max_position_embeddings=32)).save_pretrained(out)
    return out


def test_unconvertible_architecture_is_refused_before_anything_is_written(opt_model):
    with pytest.raises(InputError, match=r"config\.json: field 'architectures' \['OPTForCausalLM'\]: llama\.cpp's "
                                         r"converter \(convert_hf_to_gguf\.py"):
        export(opt_model, gguf="f16")
    assert not (opt_model.parent / "gguf").exists()


def test_the_converters_own_error_is_named_and_nothing_is_half_written(opt_model, tmp_path):
    # past the up-front check, the converter itself refuses: its message comes through, the directory stays empty
    with pytest.raises(InputError, match="llama.cpp's converter failed on .*: Model OPTForCausalLM is not supported"):
        gguf_export.export_model(opt_model, tmp_path / "gguf", "f16")
    assert list((tmp_path / "gguf").iterdir()) == []


def test_unknown_quant_type_is_refused_by_the_parser(capsys):
    from promptbake.cli import make_parser

    parser = make_parser("export")
    assert parser.parse_args(["export", "runs/x", "--gguf", "q4_k_m"]).gguf == "q4_k_m"
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["export", "runs/x", "--gguf", "q3_k"])
    assert exit_info.value.code == 2 and "argument --gguf: invalid choice: 'q3_k'" in capsys.readouterr().err
    with pytest.raises(InputError, match="--gguf 'q3_k': not one of f16, q8_0, q4_k_m"):
        export("runs/x", gguf="q3_k")


def test_a_run_with_nothing_to_export_is_named(tmp_path):
    with pytest.raises(InputError, match=f"{tmp_path}: nothing to export: no LoRA adapter .*adapter_config.json"):
        export(tmp_path, gguf="f16")
    with pytest.raises(InputError, match=f"{tmp_path}: no LoRA adapter found"):
        export(tmp_path, gguf_adapter=True)
    assert list(tmp_path.iterdir()) == []
