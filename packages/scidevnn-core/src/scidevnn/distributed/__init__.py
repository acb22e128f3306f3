"""Data-parallel training on ``torch.distributed`` (gloo on CPU, nccl on GPU).

- ``spawn(fn, nproc, *args)`` starts workers on this machine and re-raises their errors;
  ``init_from_env()`` joins a group started by ``torchrun``; ``get_rank()``,
  ``get_world_size()``, ``is_main_process()``, ``barrier()``.
- ``DistributedSampler``: each worker's shard of an epoch, in torch's index order.
- ``DistributedDataParallel``: broadcasts rank 0's weights, averages gradients during the
  backward in bucketed asynchronous all-reduces; ``average_gradients`` does it after one.
- ``DistributedError``: a peer died, never joined, or did not answer within the timeout.
"""

from __future__ import annotations

from scidevnn.distributed.buckets import GradientBuckets, average_gradients
from scidevnn.distributed.data_parallel import (
    DistributedDataParallel,
    broadcast_state,
    broadcast_tensors,
    check_same_model,
)
from scidevnn.distributed.group import (
    WorkerInfo,
    barrier,
    current_worker,
    default_backend,
    get_rank,
    get_world_size,
    init_from_env,
    is_initialized,
    is_main_process,
    shutdown,
)
from scidevnn.distributed.launcher import spawn
from scidevnn.distributed.sampler import DistributedSampler
from scidevnn.errors import DistributedError

__all__ = [
    "DistributedDataParallel",
    "DistributedError",
    "DistributedSampler",
    "GradientBuckets",
    "WorkerInfo",
    "average_gradients",
    "barrier",
    "broadcast_state",
    "broadcast_tensors",
    "check_same_model",
    "current_worker",
    "default_backend",
    "get_rank",
    "get_world_size",
    "init_from_env",
    "is_initialized",
    "is_main_process",
    "shutdown",
    "spawn",
]
