"""A heavier loss on the token that ends each answer, so that a small model learns to stop.

SFT on promptbake's rows trains the completion only, and each completion ends with the chat template's
end-of-turn token, the tokenizer's EOS: the one token that ends generation. In TRL's loss it is one token among
the answer's ~25 (the demo's two-sentence answers), and a 135M model trained on ~55 such rows often keeps going
after the answer: on the demo's held-out questions 9 of the 14 misses were answers that ran past two sentences,
most of them repeating a sentence ("use a paintbrush and paint the room. use a paintbrush and paint the room.
..."). `end_token_weight` counts that token's loss `w` times (the mean stays over the same token count, as in
TRL, so only the EOS positions weigh more).

Implemented as an extra term beside TRL's own loss, from the per-token log-probs of the forward TRL's loss comes
from (its fused LM head's; a forward hook keeps them, since TRL does not return them): loss = TRL's loss +
(w - 1) * sum(-log p(EOS) at EOS labels) / (the token count TRL divides by), with the factor TRL applies across
processes. TRL's metrics (entropy, token accuracy) are unchanged. Only TRL's plain negative log-likelihood takes
its loss from that forward, so a recipe with another `loss_type` or label smoothing is refused with a weight
other than 1 (sft/train.py), and a forward without gradients is an error rather than a silent no-op.

Measured on the demo (README, "Training"): it does what it says and did not become the default.
"""

from __future__ import annotations

import torch


class EndTokenWeighting:
    """A mixin for TRL's SFTTrainer (before it in the bases): `end_token_id`'s positions among the labels count
    `end_token_weight` times in the loss. Set both attributes after building the trainer; weight 1 is TRL's loss."""

    end_token_id: int | None = None
    end_token_weight: float = 1.0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.end_token_weight == 1.0 or self.end_token_id is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        # TRL's loss comes from one forward with `fused_lm_head=True` whose per-token log-probs it does not return
        # (asked for outputs, it runs another forward for the logits): a hook keeps that forward's output
        fused = []
        hook = model.register_forward_hook(
            lambda module, args, kwargs, output: fused.append(output) if kwargs.get("fused_lm_head") else None,
            with_kwargs=True)
        try:
            result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        finally:
            hook.remove()
        loss = result[0] if return_outputs else result
        if not fused or (model.training and not fused[0].log_probs.requires_grad):
            raise RuntimeError("end_token_weight: TRL computed this loss from another forward than the fused one "
                               "(a loss_type, label smoothing or compute_loss_func the weight does not support)")
        loss = loss + (self.end_token_weight - 1.0) * self.end_token_loss(inputs, fused[0], num_items_in_batch)
        return (loss, result[1]) if return_outputs else loss

    def end_token_loss(self, inputs: dict, outputs, num_items_in_batch) -> torch.Tensor:
        """The EOS positions' share of TRL's loss: their negative log-probs over TRL's token count."""
        # The fused head scores position t against label t + 1; pre-shifted labels (context parallelism) are as given
        labels = inputs["shift_labels"] if "shift_labels" in inputs else inputs["labels"][:, 1:]
        ends = labels.to(outputs.log_probs.device) == self.end_token_id
        num_tokens = outputs.label_mask.sum() if num_items_in_batch is None else num_items_in_batch
        term = -(outputs.log_probs * ends).sum() / torch.as_tensor(num_tokens).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            term = term * (self.accelerator.num_processes // self.get_tp_size())  # as TRL scales its own loss
        return term
