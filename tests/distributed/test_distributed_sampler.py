"""DistributedSampler: the same indices as torch.utils.data.DistributedSampler, every case."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DistributedSampler as TorchSampler

from scidevnn.distributed import DistributedSampler


@pytest.mark.parametrize("length", [0, 1, 2, 7, 10, 64, 101])
@pytest.mark.parametrize("replicas", [1, 2, 3, 4, 12])
@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("drop_last", [True, False])
def test_same_indices_as_torch(length: int, replicas: int, shuffle: bool, drop_last: bool) -> None:
    if length == 0 and not drop_last:
        return  # torch cannot pad an empty data set either (it divides by zero)
    data = range(length)
    for rank in range(replicas):
        ours = DistributedSampler(length, replicas, rank, shuffle, seed=5, drop_last=drop_last)
        theirs: TorchSampler[int] = TorchSampler(
            data,  # type: ignore[arg-type]
            replicas,
            rank,
            shuffle,
            seed=5,
            drop_last=drop_last,
        )
        for epoch in (0, 3):
            ours.set_epoch(epoch)
            theirs.set_epoch(epoch)
            assert list(ours) == list(theirs), (rank, epoch)
            assert len(ours) == len(theirs)
            assert ours.indices().dtype == torch.int64


def test_shards_cover_the_epoch_once_and_differ_between_epochs() -> None:
    length, replicas = 103, 4
    samplers = [DistributedSampler(length, replicas, rank, seed=1) for rank in range(replicas)]
    epochs = []
    for epoch in range(2):
        for sampler in samplers:
            sampler.set_epoch(epoch)
        shards = [sampler.indices() for sampler in samplers]
        everything = torch.cat(shards)
        assert set(everything.tolist()) == set(range(length))
        assert everything.numel() == 104  # one index repeated to fill the last row
        epochs.append(torch.stack(shards))
    assert not torch.equal(epochs[0], epochs[1])


def test_accepts_a_sized_object_and_defaults_to_one_process() -> None:
    sampler = DistributedSampler([10, 20, 30], shuffle=False)
    assert (sampler.num_replicas, sampler.rank) == (1, 0)
    assert list(sampler) == [0, 1, 2]


@pytest.mark.parametrize(("replicas", "rank"), [(2, 2), (2, -1), (0, 0)])
def test_bad_rank_or_replicas_is_a_clear_error(replicas: int, rank: int) -> None:
    with pytest.raises(ValueError, match="DistributedSampler"):
        DistributedSampler(10, replicas, rank)
