"""sft.padding_mask: right-padded training batches run without an attention mask and give the same loss and
gradients; left-padded batches, eval mode and models it does not apply to keep their mask."""

from __future__ import annotations

import copy

import torch
from peft import LoraConfig, get_peft_model

from promptbake.models import load_model_and_tokenizer
from sft.padding_mask import drop_mask_for_right_padding


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
    assert drop_mask_for_right_padding(hooked) is True
    assert drop_mask_for_right_padding(hooked) is True  # idempotent: one hook
    seen = masks_seen(hooked)
    reference.train()
    hooked.train()
    ids, mask, labels = batch(left=False)
    ref_loss, ref_grads = loss_and_grads(reference, ids, mask, labels)
    loss, grads = loss_and_grads(hooked, ids, mask, labels)
    assert seen[-1] is None  # the decoder layers ran without a mask (causal kernel)
    torch.testing.assert_close(loss, ref_loss)
    assert grads.keys() == ref_grads.keys() and len(grads) > 0
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-4, atol=1e-6)


def test_left_padding_and_eval_mode_keep_the_mask(tiny_model_dir):
    model = lora_model(tiny_model_dir)
    drop_mask_for_right_padding(model)
    seen = masks_seen(model)
    model.train()
    ids, mask, labels = batch(left=True)
    model(input_ids=ids, attention_mask=mask, labels=labels)
    assert seen[-1] is not None  # padding before real tokens: the mask matters
    model.eval()
    ids, mask, labels = batch(left=False)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    assert seen[-1] is not None  # generation and evaluation are left alone


def test_models_it_does_not_apply_to(tiny_model_dir):
    model = lora_model(tiny_model_dir)
    model.get_base_model().config.num_local_experts = 4  # as a mixture-of-experts config would say
    assert drop_mask_for_right_padding(model) is False
    assert drop_mask_for_right_padding(torch.nn.Linear(2, 2)) is False
