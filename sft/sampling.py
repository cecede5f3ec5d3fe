"""The training shuffle, seeded by the run's seed and the epoch instead of torch's global random stream.

transformers builds its length-grouped sampler (`train_sampling_strategy: group_by_length`, promptbake's default for
SFT and distillation) without a generator, so each epoch's shuffle drew from torch's global stream, and whatever
else moved that stream decided the order of the rows: a validation decode mid-training, the teacher's decoding in
the same process, a resumed run that had not decoded. A bake killed and resumed trained on another order than an
uninterrupted one (tests/test_bake_kill_anywhere.py: the adapters differed by ~1e-3) until the decoder re-seeded
the global stream as a side effect. Here each epoch's shuffle comes from its own generator, seeded by
(`data_seed` or `seed`) + epoch, which the trainer sets through `set_epoch` before the epoch starts, also when it
resumes mid-epoch.
"""

from __future__ import annotations

import torch
from transformers.trainer_pt_utils import LengthGroupedSampler


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """transformers' LengthGroupedSampler whose shuffle depends only on `seed` and the epoch."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        self.generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return super().__iter__()


class SeededLengthGrouping:
    """A mixin for a transformers Trainer (first in the bases): its length-grouped training sampler shuffles from
    (seed, epoch) alone. Other samplers are left as the trainer builds them."""

    def _get_train_sampler(self, train_dataset=None):
        sampler = super()._get_train_sampler(train_dataset)
        if type(sampler) is LengthGroupedSampler:
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return EpochSeededLengthGroupedSampler(sampler.batch_size, sampler.lengths, seed)
        return sampler
