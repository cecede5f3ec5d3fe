"""Validation decodes with the LoRA merged into its base layers (faster on the CPU) and must leave the weights
exactly as they were: training after a validation point equals training without one."""

import pytest
import torch
from peft.tuners.lora import LoraLayer

from sft.merged_decoding import lora_merged, mergeable_lora_layers


@pytest.fixture()
def lora_model(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    return model.eval()


def test_merged_decoding_gives_the_same_logits_and_restores_every_bit(lora_model):
    ids = torch.tensor([[1, 5, 9, 13, 2, 7]])
    state = {k: v.clone() for k, v in lora_model.state_dict().items()}
    with torch.no_grad():
        unmerged = lora_model(input_ids=ids).logits
        with lora_merged(lora_model) as merged:
            assert merged and all(m.merged for m in lora_model.modules() if isinstance(m, LoraLayer))
            inside = lora_model(input_ids=ids).logits
    # the same function (within float rounding), and afterwards the very same bits, flags included
    torch.testing.assert_close(inside, unmerged, rtol=1e-4, atol=1e-5)
    after = lora_model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in state.items())
    assert mergeable_lora_layers(lora_model)
    assert not any(m.merged for m in lora_model.modules() if isinstance(m, LoraLayer))


def test_merged_decoding_restores_the_weights_when_the_decode_fails(lora_model):
    state = {k: v.clone() for k, v in lora_model.state_dict().items()}
    with pytest.raises(RuntimeError), lora_merged(lora_model):
        raise RuntimeError("decode failed")
    assert all(torch.equal(lora_model.state_dict()[k], v) for k, v in state.items())


def test_not_merged_where_the_copy_is_not_known_to_be_safe(lora_model):
    lora_model.to(torch.float64)  # not the fp32 CPU case it was measured for
    with lora_merged(lora_model) as merged:
        assert not merged
