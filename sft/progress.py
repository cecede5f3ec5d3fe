"""The trainer's step bar, quiet: transformers' ProgressCallback prints every log as a raw dict under the bar
(`{'loss': '10.84', 'grad_norm': '0.6637', ...}`, and a `train_runtime` one at the end); this one shows the latest
loss on the bar instead. Every figure still reaches W&B and trainer_state.json. With `--verbose`, the trainer keeps
its own callback.
"""

from __future__ import annotations

from transformers.trainer_callback import ProgressCallback


class StepProgress(ProgressCallback):
    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and "loss" in (logs or {}):
            self.training_bar.set_postfix(loss=f"{logs['loss']:.4g}")


def quiet_progress(trainer) -> None:
    """Swap the trainer's ProgressCallback for StepProgress, unless the command runs with --verbose (or the trainer
    has no bar: `disable_tqdm`)."""
    from promptbake.core.entry import is_verbose

    if not is_verbose() and trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(StepProgress)
