"""The process group of a data-parallel run: joining it, this worker's rank, timeouts.

A worker joins either under ``spawn`` (which sets the group up before calling the worker's
function) or under ``torchrun``, whose environment ``init_from_env()`` reads::

    def main() -> None:
        info = scidevnn.distributed.init_from_env()   # a no-op under spawn()
        ...

Every collective has a timeout (``timeout`` seconds, default ``SCIDEVNN_DIST_TIMEOUT`` or 300):
a peer that never joins or stops answering makes the others fail with a ``DistributedError``
after at most that long; a peer that dies is noticed at once (its sockets close).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from scidevnn.errors import DistributedError

DEFAULT_TIMEOUT_S = 300.0
_TIMEOUT_ENV = "SCIDEVNN_DIST_TIMEOUT"


@dataclass(frozen=True)
class WorkerInfo:
    """Where this process stands in the run: its rank, the number of workers, its device."""

    rank: int
    world_size: int
    local_rank: int
    backend: str | None
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on rank 0, the worker that writes files and prints progress."""
        return self.rank == 0


def resolve_timeout(timeout: float | None) -> float:
    """``timeout`` in seconds, else ``SCIDEVNN_DIST_TIMEOUT``, else 300."""
    if timeout is not None:
        if timeout <= 0:
            raise ValueError(f"distributed timeout must be positive, got {timeout}")
        return float(timeout)
    value = os.environ.get(_TIMEOUT_ENV)
    if value is None:
        return DEFAULT_TIMEOUT_S
    try:
        return resolve_timeout(float(value))
    except ValueError as err:
        raise ValueError(f"{_TIMEOUT_ENV}={value!r} is not a positive number of seconds") from err


def default_backend() -> str:
    """``nccl`` when CUDA is usable, else ``gloo``."""
    return "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"


def is_initialized() -> bool:
    """True inside a worker whose process group is up."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This worker's rank (0 without a process group)."""
    return dist.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    """The number of workers (1 without a process group)."""
    return dist.get_world_size() if is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0 and in a plain single process."""
    return get_rank() == 0


def device_for(backend: str | None, local_rank: int) -> torch.device:
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def current_worker() -> WorkerInfo:
    """The ``WorkerInfo`` of this process (rank 0 of 1 without a process group)."""
    if not is_initialized():
        return WorkerInfo(0, 1, 0, None, torch.device("cpu"))
    backend = str(dist.get_backend())
    local_rank = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    return WorkerInfo(
        dist.get_rank(),
        dist.get_world_size(),
        local_rank,
        backend,
        device_for(backend, local_rank),
    )


def join_error(rank: int, world_size: int, where: str, timeout: float, err: Exception) -> str:
    first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return (
        f"worker {rank} of {world_size} could not join the others at {where} within "
        f"{timeout:g} s (a peer never started or died): {first_line}"
    )


def init_from_env(backend: str | None = None, timeout: float | None = None) -> WorkerInfo:
    """Join the process group described by torchrun's environment; idempotent.

    Reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. Without
    ``WORLD_SIZE`` (or with 1) nothing is started and the process is rank 0 of 1. Inside
    ``spawn`` the group is already up and this only returns its ``WorkerInfo``.
    """
    if is_initialized():
        return current_worker()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return current_worker()
    rank = int(os.environ["RANK"])
    seconds = resolve_timeout(timeout)
    chosen = backend or default_backend()
    where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    try:
        dist.init_process_group(
            chosen,
            init_method="env://",
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=seconds),
        )
    except (RuntimeError, ValueError) as err:
        raise DistributedError(join_error(rank, world_size, where, seconds, err)) from err
    return current_worker()


def shutdown() -> None:
    """Leave the process group (if one is up)."""
    if is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every worker gets here (no-op without a process group)."""
    if not is_initialized():
        return
    try:
        dist.barrier()
    except RuntimeError as err:
        raise collective_failed("barrier", err) from err


def collective_failed(what: str, err: Exception) -> DistributedError:
    """The error to raise when a collective failed because a peer went away.

    The process group is left (destroyed) on the spot: it cannot be used again, and a gloo group
    whose peer is gone makes the interpreter abort at exit ("terminate called ...") unless it
    was destroyed first.
    """
    first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    error = DistributedError(
        f"worker {get_rank()} of {get_world_size()}: {what} failed: a peer worker died or did "
        f"not answer within the timeout ({first_line})"
    )
    with contextlib.suppress(Exception):
        dist.destroy_process_group()
    return error
