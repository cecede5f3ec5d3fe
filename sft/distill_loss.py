"""The torch half of distillation (sft/distill.py): the collator that pads the student's and the teacher's sides of
each pair, and the trainer whose loss is a divergence between them (forward KL, reverse KL or JSD). Imported when a
run starts, so that `promptbake train distill` checks its recipe without loading torch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from transformers import Trainer

from sft.sampling import SeededLengthGrouping


def pad_side(ids: list[list[int]], starts: list[int], pad_id: int) -> dict:
    """Right-pads token sequences into one batch and records which logits predict each completion token
    (position p predicts token p + 1; a sequence's completion starts at `starts`)."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    rows, cols = [], []
    for b, (seq, start) in enumerate(zip(ids, starts)):
        input_ids[b, : len(seq)] = torch.tensor(seq)
        mask[b, : len(seq)] = 1
        rows += [b] * (len(seq) - start)
        cols += list(range(start - 1, len(seq) - 1))
    return {"ids": input_ids, "mask": mask, "rows": torch.tensor(rows), "cols": torch.tensor(cols)}


class PairCollator:
    """Pads the student and teacher sequences separately (pad_side)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict]) -> dict:
        student = pad_side([f["student_ids"] for f in features], [f["student_start"] for f in features], self.pad_id)
        teacher = pad_side([f["teacher_ids"] for f in features], [f["teacher_start"] for f in features], self.pad_id)
        batch = {f"student_{k}": v for k, v in student.items()} | {f"teacher_{k}": v for k, v in teacher.items()}
        batch["targets"] = student["ids"][student["rows"], student["cols"] + 1]
        return batch


def divergence(student: torch.Tensor, teacher: torch.Tensor, kind: str, beta: float = 0.5) -> torch.Tensor:
    """Mean over tokens (rows) of the divergence between the teacher's and the student's next-token
    distributions, given as logits of shape (tokens, vocab).

    forward_kl: KL(teacher || student), mass-covering: the student spreads over everything the teacher might say
    (classic distillation on the teacher's or the data's answers). reverse_kl: KL(student || teacher),
    mode-seeking: on the student's own samples it penalises exactly the tokens the student says and the teacher
    would not (on-policy distillation, GKD with beta=1, "Thinking Machines" on-policy distillation). jsd: the
    generalised Jensen-Shannon divergence of GKD (Agarwal et al., 2024; TRL's `generalized_jsd_loss`),
    beta*KL(teacher || m) + (1-beta)*KL(student || m) with m = beta*teacher + (1-beta)*student: bounded, between
    the two; as in TRL, beta=0 is the forward KL and beta=1 the reverse KL."""
    s, t = F.log_softmax(student, -1), F.log_softmax(teacher, -1)
    if kind == "forward_kl" or (kind == "jsd" and beta == 0.0):
        return F.kl_div(s, t, log_target=True, reduction="batchmean")
    if kind == "reverse_kl" or (kind == "jsd" and beta == 1.0):
        return F.kl_div(t, s, log_target=True, reduction="batchmean")
    if kind == "jsd":
        m = torch.logsumexp(torch.stack([s + math.log(1 - beta), t + math.log(beta)]), dim=0)
        return beta * F.kl_div(m, t, log_target=True, reduction="batchmean") + \
            (1 - beta) * F.kl_div(m, s, log_target=True, reduction="batchmean")
    raise ValueError(f"unknown divergence {kind!r}")


class DistillTrainer(SeededLengthGrouping, Trainer):
    def __init__(self, *args, temperature: float, ce_weight: float, divergence: str = "forward_kl",
                 beta: float = 0.5, **kwargs):
        super().__init__(*args, **kwargs)
        self.temperature, self.ce_weight, self.divergence, self.beta = temperature, ce_weight, divergence, beta

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        peft_model = self.accelerator.unwrap_model(model)
        with torch.no_grad(), peft_model.disable_adapter():  # the teacher: same weights, no adapter, full prompt
            teacher = model(input_ids=inputs["teacher_ids"], attention_mask=inputs["teacher_mask"]).logits
        student = model(input_ids=inputs["student_ids"], attention_mask=inputs["student_mask"]).logits
        t = teacher[inputs["teacher_rows"], inputs["teacher_cols"]] / self.temperature
        s = student[inputs["student_rows"], inputs["student_cols"]] / self.temperature
        # per response token, scaled by T^2 so gradients keep their size across T
        loss = divergence(s, t, self.divergence, self.beta) * self.temperature**2
        if self.ce_weight:
            loss = loss + self.ce_weight * F.cross_entropy(s * self.temperature, inputs["targets"])
        return (loss, student) if return_outputs else loss
