"""The training shuffle depends on the seed and the epoch only (sft/sampling.py); the bake's kill-and-resume test
(tests/test_bake_kill_anywhere.py) fails without it: the shuffle drew from torch's global stream, which a
validation decode moves."""

from types import SimpleNamespace

import torch
from transformers.trainer_pt_utils import LengthGroupedSampler

from sft.sampling import EpochSeededLengthGroupedSampler, SeededLengthGrouping

LENGTHS = [(7 * i) % 23 + 1 for i in range(40)]


def test_the_shuffle_depends_on_the_seed_and_the_epoch_and_leaves_the_global_stream_alone():
    sampler = EpochSeededLengthGroupedSampler(4, LENGTHS, seed=0)
    sampler.set_epoch(1)
    torch.manual_seed(5)
    first = list(sampler)
    torch.manual_seed(6)
    state = torch.get_rng_state()
    assert list(sampler) == first and torch.equal(torch.get_rng_state(), state)
    assert sorted(first) == list(range(40))
    sampler.set_epoch(2)
    assert list(sampler) != first
    other = EpochSeededLengthGroupedSampler(4, LENGTHS, seed=1)
    other.set_epoch(1)
    assert list(other) != first
    # transformers' own sampler, for contrast: its order follows the global stream
    plain = LengthGroupedSampler(4, lengths=LENGTHS)
    torch.manual_seed(5)
    a = list(plain)
    torch.manual_seed(6)
    assert list(plain) != a


def test_the_mixin_replaces_only_the_length_grouped_sampler():
    class Base:
        def __init__(self, sampler, seed, data_seed=None):
            self.sampler, self.args = sampler, SimpleNamespace(seed=seed, data_seed=data_seed)

        def _get_train_sampler(self, train_dataset=None):
            return self.sampler

    class Seeded(SeededLengthGrouping, Base):
        pass

    seeded = Seeded(LengthGroupedSampler(4, lengths=LENGTHS), seed=3)._get_train_sampler()
    assert isinstance(seeded, EpochSeededLengthGroupedSampler) and seeded.seed == 3 and seeded.lengths == LENGTHS
    assert Seeded(LengthGroupedSampler(4, lengths=LENGTHS), seed=3, data_seed=9)._get_train_sampler().seed == 9
    sequential = torch.utils.data.SequentialSampler(range(3))
    assert Seeded(sequential, seed=3)._get_train_sampler() is sequential
