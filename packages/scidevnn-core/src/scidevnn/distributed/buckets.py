"""Gradient buckets: parameter gradients averaged across workers in a few flat all-reduces.

Parameters are grouped, in the order their gradients become final during backward, into
buckets of about ``bucket_cap_mb`` (the first one capped at 1 MB, as torch's DDP does, so the
earliest gradients start travelling soon). When every parameter of a bucket is ready, its
gradients are copied into one flat tensor and an asynchronous ``all_reduce`` is launched; the
backward of earlier layers runs meanwhile. ``finish()`` waits for every bucket, divides by the
number of workers and copies the averages back into ``Parameter.grad``.

Buckets are always launched in order, so every worker issues the same collectives in the same
sequence. A parameter that received no gradient contributes zeros (its averaged gradient is
then set on every worker, so the replicas stay identical).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from scidevnn.distributed.group import collective_failed, get_world_size
from scidevnn.parameter import Parameter

FIRST_BUCKET_CAP_MB = 1.0


class _Bucket:
    """Parameters whose gradients travel in one flat all-reduce."""

    def __init__(self, params: list[Parameter]) -> None:
        self.params = params
        self.numel = sum(param.numel() for param in params)
        self.flat: Tensor | None = None
        self.work: Any = None
        self.pending = len(params)

    def _buffer(self) -> Tensor:
        first = self.params[0].data
        if self.flat is None or self.flat.dtype != first.dtype or self.flat.device != first.device:
            self.flat = torch.empty(self.numel, dtype=first.dtype, device=first.device)
        return self.flat

    def launch(self, group: Any) -> None:
        flat = self._buffer()
        offset = 0
        for param in self.params:
            n = param.numel()
            chunk = flat[offset : offset + n]
            if param.grad is None:
                chunk.zero_()
            else:
                chunk.view_as(param.grad).copy_(param.grad)
            offset += n
        try:
            self.work = dist.all_reduce(flat, group=group, async_op=True)
        except RuntimeError as err:
            raise collective_failed("gradient all-reduce", err) from err

    def finish(self, world_size: int) -> None:
        assert self.flat is not None and self.work is not None
        try:
            self.work.wait()
        except RuntimeError as err:
            raise collective_failed("gradient all-reduce", err) from err
        finally:
            self.work = None
        self.flat.div_(world_size)
        offset = 0
        for param in self.params:
            n = param.numel()
            average = self.flat[offset : offset + n].view(param.shape)
            if param.grad is None:
                param.grad = average.clone()
            else:
                param.grad.copy_(average)
            offset += n


class GradientBuckets:
    """Averages the gradients of ``params`` across workers, a bucket at a time.

    ``params`` must be listed in the order their gradients become final (reverse order of the
    forward for a chain of layers). Per backward pass: ``start()``, then ``ready(param)`` as
    each gradient is final (a bucket is launched as soon as all of its parameters are), then
    ``finish()``, which launches what is left and waits for everything.
    """

    def __init__(
        self, params: Sequence[Parameter], bucket_cap_mb: float = 25.0, group: Any = None
    ) -> None:
        if bucket_cap_mb <= 0:
            raise ValueError(f"bucket_cap_mb must be positive, got {bucket_cap_mb}")
        self.group = group
        self.buckets: list[_Bucket] = []
        self._bucket_of: dict[int, _Bucket] = {}
        current: list[Parameter] = []
        size = 0
        cap = min(FIRST_BUCKET_CAP_MB, bucket_cap_mb) * 2**20
        for param in params:
            nbytes = param.numel() * param.data.element_size()
            same_kind = not current or (
                current[0].dtype == param.dtype and current[0].device == param.device
            )
            if current and (size + nbytes > cap or not same_kind):
                self._add(current)
                current, size = [], 0
                cap = bucket_cap_mb * 2**20
            current.append(param)
            size += nbytes
        if current:
            self._add(current)
        self._next = 0

    def _add(self, params: list[Parameter]) -> None:
        bucket = _Bucket(params)
        self.buckets.append(bucket)
        for param in params:
            self._bucket_of[id(param)] = bucket

    def start(self) -> None:
        """Begin a backward pass: every bucket waits for all of its parameters again."""
        for bucket in self.buckets:
            if bucket.work is not None:  # a previous pass that raised midway
                bucket.work.wait()
                bucket.work = None
            bucket.pending = len(bucket.params)
        self._next = 0

    def ready(self, param: Parameter) -> None:
        """``param.grad`` is final for this pass; launch every bucket that is now complete."""
        self._bucket_of[id(param)].pending -= 1
        while self._next < len(self.buckets) and self.buckets[self._next].pending == 0:
            self.buckets[self._next].launch(self.group)
            self._next += 1

    def finish(self) -> None:
        """Launch the remaining buckets, wait for all, and store the averaged gradients."""
        while self._next < len(self.buckets):
            self.buckets[self._next].launch(self.group)
            self._next += 1
        world_size = dist.get_world_size(self.group)
        for bucket in self.buckets:
            bucket.finish(world_size)


def average_gradients(
    params: Iterable[Parameter], bucket_cap_mb: float = 25.0, group: Any = None
) -> None:
    """Replace every ``param.grad`` by its mean over the workers (after a plain backward).

    No overlap with the backward (``DistributedDataParallel`` does that); a no-op without a
    process group. Every worker must pass the same parameters in the same order.
    """
    if get_world_size() <= 1:
        return
    buckets = GradientBuckets(list(params)[::-1], bucket_cap_mb, group)
    buckets.start()
    buckets.finish()
