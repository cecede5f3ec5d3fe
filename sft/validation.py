"""Validation while training: at intervals the model answers a slice of held-back training inputs (no prompt,
greedy, with the batched decoder), the spec's checks score the answers, the best adapter so far is kept, and
training stops once validation adherence has stopped improving.

    callback = ValidationCallback(spec, items, out_dir, every=10, patience=3, run_info={...})
    SFTTrainer(..., callbacks=[callback])

This is what lets a bake pick its training length from the data instead of a fixed epoch count: the budget
only bounds the run, the checks decide which step to keep. Every point of the curve (step, loss, all-rules and
per-rule adherence) is appended to `<out_dir>/validation.jsonl` as it is measured, so a resumed run keeps the
curve, and logged to W&B when a run is active. The kept adapter is `<out_dir>/best_adapter`, a complete
adapter directory (weights, tokenizer, run info) that every stage loads like a finished run's adapter.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from transformers import TrainerCallback

from data_tools.scoring import adherence, score
from data_tools.spec import PromptSpec, Sampling
from promptbake.core.io import append_jsonl, atomic_dir, check_output_dir, recover_journal, write_jsonl
from promptbake.core.models import RUN_INFO_FILE, is_run_output
from sft.merged_decoding import lora_merged

log = logging.getLogger(__name__)

CURVE_FILE = "validation.jsonl"
BEST_DIR = "best_adapter"


@dataclass
class ValidationPoint:
    step: int
    loss: float | None
    """The last training loss logged at or before this step (None before the first log)."""
    all_rules: float
    """Share of validation inputs whose answer passed every check."""
    per_rule: dict[str, float]

    @property
    def key(self) -> tuple[float, float]:
        """What "better" means: more inputs passing every rule, then more rules passed on average."""
        mean_rule = sum(self.per_rule.values()) / len(self.per_rule) if self.per_rule else 0.0
        return (self.all_rules, mean_rule)


def score_answers(spec: PromptSpec, items: list[tuple[str, str | None]], answers: list[str]
                  ) -> tuple[float, dict[str, float]]:
    """(all-rules adherence, adherence per rule) of one answer per input."""
    return adherence(spec.rules, [score(spec.rules, text, answer, label)
                                  for (text, label), answer in zip(items, answers)])


def read_curve(out_dir: Path) -> list[ValidationPoint]:
    # appended point by point: a kill mid-append leaves a torn last line, cut off here (that point is measured
    # again) rather than refused as invalid JSON on resume
    return [ValidationPoint(**row) for row in recover_journal(Path(out_dir) / CURVE_FILE)]


class ValidationCallback(TrainerCallback):
    """Score the model on the validation slice every `every` optimizer steps (and before the first step, and
    at the last); keep the best adapter; stop after `patience` evaluations without improvement, or as soon
    as every validation input passes every rule (nothing left to improve)."""

    def __init__(self, spec: PromptSpec, items: list[tuple[str, str | None]], out_dir: str | Path, every: int,
                 patience: int, run_info: dict, max_new_tokens: int = 64, batch_size: int = 16):
        if not items:
            raise ValueError("a validation callback needs validation inputs")
        self.spec, self.items, self.out_dir = spec, items, Path(out_dir)
        check_output_dir(self.out_dir / BEST_DIR, "adapter", legacy=is_run_output)  # before training, not at step 0
        self.every, self.patience = max(1, every), max(1, patience)
        self.tokenizer = None  # the trainer's own (its processing_class), taken from the first event
        self.run_info, self.batch_size = run_info, batch_size
        self.sampling = Sampling(temperature=0.0, max_new_tokens=max_new_tokens)
        self.seconds = 0.0  # time spent measuring in this process (decoding, scoring, saving the best adapter)
        self.curve: list[ValidationPoint] = []

    @property
    def best(self) -> ValidationPoint | None:
        # max() keeps the first of equal keys: the earliest step wins a tie (less training, less memorising)
        return max(self.curve, key=lambda p: p.key) if self.curve else None

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        self.tokenizer = processing_class
        # a resumed run keeps the points measured up to its checkpoint; later ones are measured again, so they
        # leave the file too (a kill between a measurement and its checkpoint, or after the last one, left them
        # there: the curve held those steps twice)
        measured = read_curve(self.out_dir)
        self.curve = [p for p in measured if p.step <= state.global_step]
        if len(self.curve) < len(measured) and state.is_world_process_zero:
            write_jsonl(self.out_dir / CURVE_FILE, [asdict(p) for p in self.curve])
        best_info = self.out_dir / BEST_DIR / RUN_INFO_FILE
        if best_info.exists() and json.loads(best_info.read_text()).get("step", 0) > state.global_step:
            shutil.rmtree(self.out_dir / BEST_DIR)  # kept after the checkpoint we resume from: measured again
        if not self.curve and state.is_world_process_zero:
            # step 0: the untrained adapter is the base model answering without the prompt
            self.measure(model, state)
        return control

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        if step % self.every == 0 or step >= state.max_steps:
            if self.curve and self.curve[-1].step == step:
                return control
            # every process measures the same greedy answers, so every process takes the same decision
            point = self.measure(model, state)
            if self.should_stop(point):
                control.should_training_stop = True
                # and no checkpoint of this step (save_steps may ask for one): the decision to stop is not in it, so
                # a run killed before its end and resumed from it trained on past the stop, to other points and
                # another kept step; resumed from the checkpoint before, it replays these steps and stops here again
                control.should_save = False
            elif step < state.max_steps:
                control.should_save = True  # a checkpoint at every measured step: resume loses no curve
        return control

    def should_stop(self, point: ValidationPoint) -> bool:
        if point.all_rules >= 1.0:
            log.info("validation: every input passes every rule at step %d; stopping", point.step)
            return True
        best = self.best
        since_best = sum(p.step > best.step for p in self.curve)
        if since_best >= self.patience:
            log.info("validation: no improvement in %d evaluations since step %d (all rules %.0f%%); stopping",
                     since_best, best.step, 100 * best.all_rules)
            return True
        return False

    def measure(self, model, state) -> ValidationPoint:
        from data_tools.backends import LocalBackend

        start = time.perf_counter()
        was_training = model.training
        conversations = [[{"role": "user", "content": text}] for text, _ in self.items]
        try:
            with lora_merged(model):  # a third faster on the CPU; the weights are restored bit for bit
                completions = LocalBackend(model, self.tokenizer, self.batch_size).generate(conversations,
                                                                                            self.sampling)
        finally:
            model.train(was_training)
        all_rules, per_rule = score_answers(self.spec, self.items, [c.texts[0] for c in completions])
        losses = [h["loss"] for h in state.log_history if "loss" in h]
        point = ValidationPoint(step=state.global_step, loss=losses[-1] if losses else None, all_rules=all_rules,
                                per_rule=per_rule)
        improved = self.best is None or point.key > self.best.key
        self.curve.append(point)
        if state.is_world_process_zero:
            append_jsonl(self.out_dir / CURVE_FILE, [asdict(point)])
            if improved:
                self.save_best(model)
            log_to_wandb(point)
        print(f"[promptbake] validation step {point.step}: all rules {point.all_rules:.0%} "
              f"({' '.join(f'{k} {v:.0%}' for k, v in per_rule.items())})"
              f"{' <- best' if improved else ''}", flush=True)
        self.seconds += time.perf_counter() - start
        return point

    def save_best(self, model) -> None:
        with atomic_dir(self.out_dir / BEST_DIR, "adapter", legacy=is_run_output) as tmp:
            # only the adapter being trained: DPO holds a frozen copy of its starting adapter beside it
            active = getattr(model, "active_adapter", None)
            model.save_pretrained(str(tmp), **({"selected_adapters": [active]} if isinstance(active, str) else {}))
            self.tokenizer.save_pretrained(str(tmp))
            info = {**self.run_info, "step": self.curve[-1].step, "validation": asdict(self.curve[-1])}
            (tmp / RUN_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")


def log_to_wandb(point: ValidationPoint) -> None:
    try:
        import wandb
    except ImportError:
        return
    if wandb.run is None:
        return
    # the trainer's W&B callback plots every metric against train/global_step
    wandb.log({"train/global_step": point.step, "validation/all_rules": point.all_rules,
               **{f"validation/{rid}": v for rid, v in point.per_rule.items()}})
