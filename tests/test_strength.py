"""The adapter's strength (promptbake/strength.py): a scaled copy is the same model as PEFT's runtime scaling, the
choice reads the validation slice first and drift second, and the bake runs it as a stage between SFT and eval."""

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from promptbake.strength import StrengthSpec, choose_strength, pick, scaled_copy


def point(s, all_rules, kept, mean_rule=0.5):
    return {"strength": s, "all_rules": all_rules, "kept_correct": kept, "mean_rule": mean_rule}


def test_pick_reads_the_rules_first_and_drift_only_between_ties():
    assert pick([point(1.0, 0.8, 0.5), point(0.6, 0.7, 1.0)])["strength"] == 1.0  # rules first
    assert pick([point(1.0, 0.8, 0.5), point(0.8, 0.8, 0.9), point(0.6, 0.8, 0.7)])["strength"] == 0.8
    assert pick([point(1.0, 0.8, None), point(0.8, 0.8, None)])["strength"] == 1.0  # nothing to tell: as trained


def test_scaled_copy_is_the_runtime_scaling(trained_adapter, tmp_path):
    from peft.helpers import rescale_adapter_scale

    from promptbake.core.models import load_model_and_tokenizer

    copy = scaled_copy(str(trained_adapter), 0.6, tmp_path / "scaled")
    a, b = load_file(trained_adapter / "adapter_model.safetensors"), load_file(copy / "adapter_model.safetensors")
    assert all(torch.equal(b[k], a[k] * 0.6 if "lora_B" in k else a[k]) for k in a)
    assert json.loads((copy / "promptbake_run.json").read_text())["strength"]["multiplier"] == 0.6
    ids = torch.tensor([[1, 5, 9, 14, 3]])
    original, _ = load_model_and_tokenizer(str(trained_adapter), merge_adapter=False)
    scaled, _ = load_model_and_tokenizer(str(copy))
    with torch.no_grad(), rescale_adapter_scale(original, 0.6):
        expected = original(input_ids=ids).logits
    with torch.no_grad():
        got, full = scaled(input_ids=ids).logits, original(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-5) and not torch.allclose(got, full, atol=1e-3)


def test_choose_strength_measures_every_candidate_and_writes_the_choice(trained_adapter, tiny_spec, tmp_path):
    from data_tools.spec import load_spec

    spec = load_spec(tiny_spec)
    items = [(f"Tell me about thing {i}.", None) for i in range(4)]
    record = choose_strength(str(trained_adapter), spec, items, drift_questions=40,
                             strength=StrengthSpec(search=True, candidates=[1.0, 0.5], questions=10),
                             max_new_tokens=8, batch_size=8, out=tmp_path)
    assert [p["strength"] for p in record["points"]] == [1.0, 0.5] and record["questions"] == 10
    assert record["strength"] == pick(record["points"])["strength"]
    assert json.loads((tmp_path / "strength.json").read_text()) == record
    expected = str(trained_adapter) if record["strength"] == 1.0 else str(tmp_path / "adapter")
    assert record["tuned_model"] == expected and Path(expected, "adapter_model.safetensors").exists()
