"""sft.padding_mask: right-padded training batches run without an attention mask and give the same loss and
gradients; left-padded batches, cached calls, eval mode and models it does not apply to keep their mask; the
hook is gone when the block ends."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model

from promptbake.core.models import load_model_and_tokenizer
from sft.padding_mask import _drop_right_padding_mask, right_padding_without_mask


def lora_model(model_dir):
    base, _ = load_model_and_tokenizer(str(model_dir))
    torch.manual_seed(0)
    return get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))


def masks_seen(model):
    """The attention_mask each decoder layer receives, recorded per forward."""
    seen = []
    layer = model.get_base_model().model.layers[0]
    layer.register_forward_pre_hook(lambda m, a, k: seen.append(k.get("attention_mask")), with_kwargs=True)
    return seen


def loss_and_grads(model, ids, mask, labels):
    model.zero_grad()
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    return out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def batch(left: bool):
    ids = torch.randint(0, 1000, (3, 12))
    mask = torch.ones_like(ids)
    if left:
        mask[1, :4] = 0
    else:
        mask[1, 8:] = 0
        mask[2, 10:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :3] = -100
    return ids, mask, labels


def test_right_padded_training_batches_drop_the_mask_and_train_the_same(tiny_model_dir):
    reference = lora_model(tiny_model_dir)
    hooked = copy.deepcopy(reference)
    seen = masks_seen(hooked)
    reference.train()
    hooked.train()
    ids, mask, labels = batch(left=False)
    ref_loss, ref_grads = loss_and_grads(reference, ids, mask, labels)
    with right_padding_without_mask(hooked) as installed:
        assert installed is True
        loss, grads = loss_and_grads(hooked, ids, mask, labels)
    assert seen[-1] is None  # the decoder layers ran without a mask (causal kernel)
    torch.testing.assert_close(loss, ref_loss)
    assert grads.keys() == ref_grads.keys() and len(grads) > 0
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-4, atol=1e-6)


def test_left_padding_and_eval_mode_keep_the_mask(tiny_model_dir):
    model = lora_model(tiny_model_dir)
    seen = masks_seen(model)
    with right_padding_without_mask(model):
        model.train()
        ids, mask, labels = batch(left=True)
        model(input_ids=ids, attention_mask=mask, labels=labels)
        assert seen[-1] is not None  # padding before real tokens: the mask matters
        ids, mask, labels = batch(left=False)
        model.eval()
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask)
        assert seen[-1] is not None  # generation and evaluation are left alone


@pytest.mark.parametrize("name", ["cache", "past_key_values"])
def test_a_cached_call_keeps_its_mask(name):
    """With keys and values cached from earlier calls the mask also covers them: kept, under either name."""
    module = torch.nn.Linear(2, 2).train()
    mask = torch.tensor([[1, 1, 0]])
    _, kwargs = _drop_right_padding_mask(module, (), {"attention_mask": mask, name: object()})
    assert kwargs["attention_mask"] is mask
    _, kwargs = _drop_right_padding_mask(module, (), {"attention_mask": mask, name: None})
    assert kwargs["attention_mask"] is None


def test_the_hook_is_gone_after_the_block(tiny_model_dir):
    model = lora_model(tiny_model_dir)
    backbone = model.get_base_model().model
    seen = masks_seen(model)
    model.train()
    ids, mask, labels = batch(left=False)
    with pytest.raises(KeyboardInterrupt), right_padding_without_mask(model):
        assert len(backbone._forward_pre_hooks) == 1
        raise KeyboardInterrupt  # a run stopped mid-training
    assert len(backbone._forward_pre_hooks) == 0
    model(input_ids=ids, attention_mask=mask, labels=labels)
    assert seen[-1] is not None


def test_models_it_does_not_apply_to(tiny_model_dir):
    model = lora_model(tiny_model_dir)
    model.get_base_model().config.num_local_experts = 4  # as a mixture-of-experts config would say
    for other in (model, torch.nn.Linear(2, 2)):
        with right_padding_without_mask(other) as installed:
            assert installed is False
