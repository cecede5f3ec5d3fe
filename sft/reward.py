"""A reward model trained on promptbake's preference rows, with TRL's RewardTrainer; and the scorer that
online RL (`sft.rl`, reward "reward_model") calls.

    python -m sft.reward configs/reward/demo_reward.yaml dataset=runs/demo/data/prefs_train.jsonl [--resume]
    accelerate launch -m sft.reward configs/reward/demo_reward.yaml dataset=...   # same run under Accelerate

The model is the base with a sequence-classification head of one output (`score`, new and randomly
initialised) that reads the hidden state of the last token of prompt + answer; training raises the score of
the chosen answer above the rejected one (Bradley-Terry loss). With an adapter, the LoRA config has task
type SEQ_CLS, for which PEFT adds `score` to `modules_to_save` (PeftModelForSequenceClassification), so the
new head trains in full and is saved with the adapter; without that it would stay random.

A reward model learns what separates the pairs it saw: where the rules have exact checks, the checks
themselves are the better reward (`sft.rl` reward "checks"); a reward model serves rules no check captures,
such as tone.

Writes `<output_dir>/adapter` (LoRA + head; `<output_dir>/model` for full fine-tuning) with
`promptbake_run.json`, and checkpoints under `<output_dir>/checkpoints`.
"""

from __future__ import annotations

from pathlib import Path

from promptbake.core.config import InputError
from promptbake.core.layout import DatasetLayout
from sft.dpo import PREFERENCE_FIELDS
from sft.recipe import BaseRecipe, peft_config, quantization_for, run_trainer, trainer_parser
from sft.training import TRAINING_DEFAULTS, TrainingSpec


class RewardTraining(TrainingSpec):
    """`training:` for a reward model: any field of TRL's RewardConfig (https://huggingface.co/docs/trl/reward_trainer).
    Pairs are batched at random, as for DPO (sft.dpo.DPOTraining)."""

    config_path = "trl.RewardConfig"
    defaults = TRAINING_DEFAULTS


class RewardRecipe(BaseRecipe):
    output_dir: str = "runs/reward"
    training: RewardTraining = RewardTraining()
    center_rewards_coefficient: float | None = None
    """Pulls the mean reward towards zero (e.g. 0.01), which keeps rewards on a stable scale when several
    reward sources are added up in RL; None leaves the scale free."""

    def settings(self):
        return super().settings() | {"center_rewards_coefficient": (self.center_rewards_coefficient,
                                                                    "use the recipe's `center_rewards_coefficient`")}


def main(recipe: RewardRecipe, resume: bool = False) -> Path:
    """Train and return the adapter directory (or the model directory for full fine-tuning)."""
    return run_trainer(recipe, resume, name="reward", rows_file=DatasetLayout.PREFS_TRAIN, fields=PREFERENCE_FIELDS,
                       load=load_sequence_classifier, build=build_trainer)


def build_trainer(recipe: RewardRecipe, model, tokenizer, rows, config):
    from trl import RewardTrainer

    trainer = RewardTrainer(model=model, args=config, train_dataset=rows, processing_class=tokenizer,
                            peft_config=peft_config(recipe, task_type="SEQ_CLS"))
    dropped = len(rows) - len(trainer.train_dataset)
    if dropped == len(rows):
        raise InputError(f"every pair is longer than training.max_length={config.max_length}; raise it")
    if dropped:  # RewardTrainer drops over-long pairs rather than cutting them (a cut answer scores differently)
        print(f"[promptbake] warning: {dropped} of {len(rows)} pairs exceed training.max_length="
              f"{config.max_length} and are left out; raise it to keep them")
    return trainer


def load_sequence_classifier(recipe: RewardRecipe, precision: str):
    """The base model with a one-output score head (4-bit nf4 for qlora), and its tokenizer. The head is new and
    random: its initialisation follows training.seed, so a run is reproducible."""
    import torch
    from transformers import AutoModelForSequenceClassification, set_seed

    from promptbake.core.models import load_tokenizer, read_run_info, resolve_model_path

    path = resolve_model_path(recipe.model)
    if read_run_info(path) is not None:
        raise InputError(f"model {recipe.model!r} is an adapter directory; a reward model starts from a full model: "
                         f"merge it first with `promptbake export`, then set model=<the merged directory>")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    quantization = quantization_for(recipe, precision)
    tokenizer = load_tokenizer(recipe.model, recipe.trust_remote_code)
    set_seed(recipe.training.seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=1, dtype=dtype, use_safetensors=True, trust_remote_code=recipe.trust_remote_code,
        quantization_config=quantization)
    model.config.pad_token_id = tokenizer.pad_token_id  # the head reads the last token that is not padding
    return model, tokenizer


class RewardScorer:
    """Scores an answer to a conversation with a trained reward model: higher means more preferred.

    The text is rendered exactly as RewardTrainer rendered the training pairs: the chat template over the
    prompt messages followed by the answer as an assistant message.
    """

    def __init__(self, model, tokenizer):
        self.model = model.eval()
        self.tokenizer = tokenizer

    def __call__(self, prompt: list[dict], completion: str) -> float:
        return self.score_batch([prompt], [completion])[0]

    def score_batch(self, prompts: list[list[dict]], completions: list[str]) -> list[float]:
        import torch

        texts = [self.tokenizer.apply_chat_template(p + [{"role": "assistant", "content": c}], tokenize=False)
                 for p, c in zip(prompts, completions, strict=True)]
        batch = self.tokenizer(texts, return_tensors="pt", padding=True, padding_side="right",
                               add_special_tokens=False).to(self.model.device)
        with torch.no_grad():
            return self.model(**batch).logits[:, 0].float().tolist()


def load_reward_model(path: str | Path) -> RewardScorer:
    """A reward run directory (or its adapter/ or model/ directory) as a scorer; an adapter is merged into
    its base."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    from promptbake.core.models import load_tokenizer, read_run_info, resolve_model_path

    path = Path(path)
    for sub in ("adapter", "model"):
        if (path / sub).is_dir():
            path = path / sub
    if not path.is_dir():
        raise InputError(f"reward model {str(path)!r}: no such directory (expected a reward run directory)")
    info = read_run_info(str(path))
    if info is not None:
        # transformers would report the base's score head as "newly initialised, consider training"; the
        # adapter's trained head replaces it on the next line, so that report would only mislead
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            base = AutoModelForSequenceClassification.from_pretrained(
                resolve_model_path(info["base_model"]), num_labels=1, use_safetensors=True)
        finally:
            hf_logging.set_verbosity(verbosity)
        model = PeftModel.from_pretrained(base, str(path)).merge_and_unload()
    else:
        model = AutoModelForSequenceClassification.from_pretrained(path, use_safetensors=True)
    if model.config.num_labels != 1:
        raise InputError(f"reward model {str(path)!r}: has {model.config.num_labels} outputs, a reward model has 1 "
                         "(train one with `python -m sft.reward`)")
    tokenizer = load_tokenizer(str(path))
    model.config.pad_token_id = tokenizer.pad_token_id
    return RewardScorer(model, tokenizer)


def make_parser(subparsers=None):
    """`promptbake train reward` (added to `subparsers`) or `python -m sft.reward`."""
    return trainer_parser(subparsers, "reward", RewardRecipe, main,
                          "a reward model on preference rows", "configs/reward/demo_reward.yaml")


if __name__ == "__main__":
    from promptbake.core.entry import run_command

    run_command(make_parser())
