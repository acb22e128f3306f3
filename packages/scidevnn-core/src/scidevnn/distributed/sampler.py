"""DistributedSampler: each worker's share of an epoch, in torch's exact index order.

Every worker draws the same permutation of ``range(n)`` (a generator seeded with
``seed + epoch``), extends it to a multiple of the number of workers by repeating its head
(or cuts the tail with ``drop_last``), and keeps every ``num_replicas``-th index starting at
its rank. The indices are those of ``torch.utils.data.DistributedSampler`` for the same
arguments, so a run may switch between the two (or between numbers of workers) freely.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sized

import torch
from torch import Tensor

from scidevnn.distributed.group import get_rank, get_world_size


class DistributedSampler:
    """Indices of worker ``rank`` out of ``num_replicas`` for one epoch.

    ``data`` is a length or anything with ``len()``. ``num_replicas`` and ``rank`` default to
    the process group's (1 and 0 without one). Call ``set_epoch(e)`` before each epoch so the
    shuffle differs between epochs; every worker must use the same ``seed``.

    Each worker gets ``num_samples`` indices: ``ceil(n / W)``, or ``ceil((n - W) / W)`` with
    ``drop_last`` when ``n`` is not a multiple of ``W`` (the remainder is dropped rather than
    padded with repeated samples).
    """

    def __init__(
        self,
        data: Sized | int,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        self.length = data if isinstance(data, int) else len(data)
        if self.length < 0:
            raise ValueError(f"DistributedSampler: negative data length {self.length}")
        self.num_replicas = get_world_size() if num_replicas is None else num_replicas
        self.rank = get_rank() if rank is None else rank
        if self.num_replicas < 1:
            raise ValueError(f"DistributedSampler: num_replicas must be >= 1, got {num_replicas}")
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(
                f"DistributedSampler: rank {self.rank} is outside [0, {self.num_replicas - 1}]"
            )
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0
        if drop_last and self.length % self.num_replicas != 0:
            self.num_samples = math.ceil((self.length - self.num_replicas) / self.num_replicas)
        else:
            self.num_samples = math.ceil(self.length / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose shuffle ``indices()`` returns (the seed is ``seed + epoch``)."""
        self.epoch = epoch

    def indices(self) -> Tensor:
        """This worker's indices for the current epoch, shape (num_samples,), int64."""
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.length, generator=generator)
        else:
            order = torch.arange(self.length)
        if self.total_size > self.length:
            if self.length == 0:
                raise ValueError("DistributedSampler: cannot pad an empty data set")
            repeats = math.ceil(self.total_size / self.length)
            order = order.repeat(repeats)
        order = order[: self.total_size]
        return order[self.rank : self.total_size : self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.num_samples

    def __repr__(self) -> str:
        return (
            f"DistributedSampler(length={self.length}, num_replicas={self.num_replicas}, "
            f"rank={self.rank}, shuffle={self.shuffle}, seed={self.seed}, "
            f"drop_last={self.drop_last})"
        )
