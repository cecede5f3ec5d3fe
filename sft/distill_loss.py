"""The torch half of distillation (sft/distill.py): the collator that pads the student's and the teacher's sides of
each pair, and the trainer whose loss is the KL between them. Imported when a run starts, so that `promptbake train
distill` checks its recipe without loading torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import Trainer


class PairCollator:
    """Pads the student and teacher sequences separately and records, for both, which logits predict
    each completion token (position p predicts token p + 1)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def _side(self, ids: list[list[int]], starts: list[int]) -> dict:
        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), self.pad_id)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        rows, cols = [], []
        for b, (seq, start) in enumerate(zip(ids, starts)):
            input_ids[b, : len(seq)] = torch.tensor(seq)
            mask[b, : len(seq)] = 1
            rows += [b] * (len(seq) - start)
            cols += list(range(start - 1, len(seq) - 1))
        return {"ids": input_ids, "mask": mask, "rows": torch.tensor(rows), "cols": torch.tensor(cols)}

    def __call__(self, features: list[dict]) -> dict:
        student = self._side([f["student_ids"] for f in features], [f["student_start"] for f in features])
        teacher = self._side([f["teacher_ids"] for f in features], [f["teacher_start"] for f in features])
        batch = {f"student_{k}": v for k, v in student.items()} | {f"teacher_{k}": v for k, v in teacher.items()}
        batch["targets"] = student["ids"][student["rows"], student["cols"] + 1]
        return batch


class DistillTrainer(Trainer):
    def __init__(self, *args, temperature: float, ce_weight: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.temperature, self.ce_weight = temperature, ce_weight

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        peft_model = self.accelerator.unwrap_model(model)
        with torch.no_grad(), peft_model.disable_adapter():  # the teacher: same weights, no adapter, full prompt
            teacher = model(input_ids=inputs["teacher_ids"], attention_mask=inputs["teacher_mask"]).logits
        student = model(input_ids=inputs["student_ids"], attention_mask=inputs["student_mask"]).logits
        t = teacher[inputs["teacher_rows"], inputs["teacher_cols"]] / self.temperature
        s = student[inputs["student_rows"], inputs["student_cols"]] / self.temperature
        # KL(teacher || student) per response token, scaled by T^2 so gradients keep their size across T
        loss = F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True,
                        reduction="batchmean") * self.temperature**2
        if self.ce_weight:
            loss = loss + self.ce_weight * F.cross_entropy(s * self.temperature, inputs["targets"])
        return (loss, student) if return_outputs else loss
