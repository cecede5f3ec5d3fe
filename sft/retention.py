"""A KL retention term beside SFT's loss: on general questions the tuned model's next-token distributions are held
to the base's own (the adapter switched off), so that baking a spec's format moves less of what the model knew.

The bake's replay rows (promptbake/replay.py) are the base's greedy answers to general questions, trained as
ordinary SFT rows: each answer token is a hard label. That carries one token of the base's distribution per
position and makes the rows part of the SFT data, so they share its epochs and budget (one replay row per spec
row doubled the demo's training time) and their answers are learned like the spec's. Here the same rows are not
trained on; at every training step a small batch of them goes through the model twice, once with the adapter off
(the base: no gradient, no second copy in memory, as in sft/distill_loss.py) and once with it on, and

    loss = TRL's SFT loss + retention_weight * KL(base || tuned)

over the answers' tokens (the forward KL, mean per token: mass-covering, the tuned model keeps everything the base
would say there). This is "learning without forgetting" (Li & Hoiem, 2016) with the base's own answers as the
inputs, and the Prompt Baking paper's KL objective turned to the questions the spec does not cover.

The batches cycle through the rows in an order fixed by the seed (each process its own batch of them); a resumed
run starts at the step it resumes from. Under gradient accumulation the term is scaled as TRL scales its own loss
(under several processes, DDP's mean of the gradients is already the mean of the processes' terms), so that the
weight means the same per optimizer step in every setup. The term is logged beside the loss (`retention_kl`).
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from sft.distill_loss import divergence, pad_side


class RetentionRows:
    """The retention rows, tokenized once (prompt + answer, the answer's start), and the batch of each call."""

    def __init__(self, encoded: list[tuple[list[int], int]], batch_size: int, seed: int, pad_id: int):
        if not encoded:
            raise ValueError("no retention rows")
        self.encoded, self.batch_size, self.pad_id = encoded, batch_size, pad_id
        self.order = list(range(len(encoded)))
        random.Random(seed).shuffle(self.order)

    @classmethod
    def from_file(cls, path: Path, tokenizer, max_length: int, batch_size: int, seed: int) -> RetentionRows:
        from promptbake.core.io import iter_jsonl
        from sft.distill import encode

        encoded = []
        for _, row in iter_jsonl(path):
            ids, start = encode(tokenizer, row["prompt"], row["completion"])
            if start < max_length:  # a row whose answer max_length cuts off entirely has nothing to hold
                encoded.append((ids[:max_length], start))
        if not encoded:
            from promptbake.core.config import InputError

            raise InputError(f"{path}: no retention row keeps an answer token within training.max_length={max_length}")
        return cls(encoded, batch_size, seed, tokenizer.pad_token_id)

    def batch(self, call: int) -> dict:
        """The `call`-th batch (0, 1, ...): consecutive rows of the seeded order, wrapping around."""
        n = len(self.order)
        picked = [self.encoded[self.order[(call * self.batch_size + i) % n]] for i in range(self.batch_size)]
        return pad_side([ids for ids, _ in picked], [start for _, start in picked], self.pad_id)


class RetentionKL:
    """A mixin for TRL's SFTTrainer (before it in the bases): adds `retention_weight` x KL(base || tuned) on a
    batch of `retention` rows to every training loss. The model must be a PEFT model (the base is its adapter
    switched off). Set both attributes after building the trainer; no rows (None) is TRL's loss."""

    retention: RetentionRows | None = None
    retention_weight: float = 0.0
    _retention_calls: int | None = None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if self.retention is None or not model.training:
            return result
        loss = result[0] if return_outputs else result
        term = self.retention_term(model)
        self._metrics["train"]["retention_kl"].append(term.item())
        # TRL's loss was divided by the tokens of every accumulated micro-batch (num_items_in_batch) and is not
        # divided again by the Trainer; this mean over one micro-batch is, to weigh the same per optimizer step
        if self.loss_scaled_for_accumulation(num_items_in_batch):
            term = term / self.current_gradient_accumulation_steps
        loss = loss + self.retention_weight * term
        return (loss, result[1]) if return_outputs else loss

    def loss_scaled_for_accumulation(self, num_items_in_batch) -> bool:
        """transformers' own test (Trainer.training_step) of whether it leaves the loss undivided."""
        if self.loss_is_scaled_for_ga is not None:
            return bool(self.loss_is_scaled_for_ga)
        return (self.model_accepts_loss_kwargs and num_items_in_batch is not None) or self.compute_loss_func is not None

    def retention_term(self, model) -> torch.Tensor:
        """KL(base || tuned) per answer token on this call's batch of retention rows."""
        if self._retention_calls is None:  # a resumed run goes on from its step's rows
            self._retention_calls = self.state.global_step * self.args.gradient_accumulation_steps
        # under several processes each takes its own rows of the call, as each takes its own training rows
        batch = self.retention.batch(self._retention_calls * self.accelerator.num_processes
                                     + self.accelerator.process_index)
        self._retention_calls += 1
        device = next(model.parameters()).device
        ids, mask = batch["ids"].to(device), batch["mask"].to(device)
        rows, cols = batch["rows"].to(device), batch["cols"].to(device)
        peft_model = self.accelerator.unwrap_model(model)
        with torch.no_grad(), peft_model.disable_adapter():
            base = model(input_ids=ids, attention_mask=mask).logits[rows, cols]
        tuned = model(input_ids=ids, attention_mask=mask).logits[rows, cols]
        return divergence(tuned.float(), base.float(), "forward_kl")
