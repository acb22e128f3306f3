"""Starting the workers of a data-parallel run: ``spawn`` on one machine, or ``torchrun``.

Two ways to start, one worker function::

    def main(epochs: int) -> float:          # runs in every worker
        info = scidevnn.distributed.init_from_env()   # no-op under spawn(); reads torchrun's env
        ...
    scidevnn.distributed.spawn(main, 4, 10)  # or: torchrun --nproc-per-node 4 script.py

``spawn`` starts ``nproc`` processes (the ``spawn`` start method), hosts the rendezvous store in
the parent on 127.0.0.1 and a port the system picks (so no port can be taken in between), sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in each worker as
torchrun does, joins the process group, limits each worker to ``threads`` intra-op threads and
calls ``fn(*args)``. It returns rank 0's result. When a worker fails, the others are stopped and
``spawn`` raises ``DistributedError`` naming the worker and its exit code.

Every collective has a timeout (``timeout`` seconds, default ``SCIDEVNN_DIST_TIMEOUT`` or 300):
a peer that never joins or stops answering makes the others fail with a ``DistributedError``
after at most that long; a peer that dies is noticed at once (its sockets close).
"""

from __future__ import annotations

import datetime
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, TypeVar, cast

import torch
import torch.distributed as dist
import torch.multiprocessing as torch_mp

from scidevnn.errors import DistributedError, SciDevNNError

R = TypeVar("R")

DEFAULT_TIMEOUT_S = 300.0
_TIMEOUT_ENV = "SCIDEVNN_DIST_TIMEOUT"
#: After one worker fails, how long the others get to stop by themselves before ``terminate``.
_GRACE_S = 10.0


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


def _device_for(backend: str | None, local_rank: int) -> torch.device:
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
        _device_for(backend, local_rank),
    )


def _join_error(rank: int, world_size: int, where: str, timeout: float, err: Exception) -> str:
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
        raise DistributedError(_join_error(rank, world_size, where, seconds, err)) from err
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
        raise DistributedError(collective_error("barrier", err)) from err


def collective_error(what: str, err: Exception) -> str:
    """The one-line message of a collective that failed because a peer went away."""
    first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return (
        f"worker {get_rank()} of {get_world_size()}: {what} failed: a peer worker died or did "
        f"not answer within the timeout ({first_line})"
    )


# --------------------------------------------------------------------------- spawn
def _worker_main(
    rank: int,
    nproc: int,
    port: int,
    backend: str,
    timeout: float,
    threads: int,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    result_conn: Connection | None,
) -> None:
    """Body of one spawned worker: environment, threads, process group, ``fn``, exit code."""
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(nproc),
        LOCAL_WORLD_SIZE=str(nproc),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS=str(threads),
    )
    torch.set_num_threads(threads)
    code = 0
    try:
        store = dist.TCPStore(  # type: ignore[attr-defined]
            "127.0.0.1",
            port,
            nproc,
            is_master=False,
            timeout=datetime.timedelta(seconds=timeout),
        )
        try:
            dist.init_process_group(
                backend,
                store=store,
                rank=rank,
                world_size=nproc,
                timeout=datetime.timedelta(seconds=timeout),
            )
        except (RuntimeError, ValueError) as err:
            raise DistributedError(
                _join_error(rank, nproc, f"127.0.0.1:{port}", timeout, err)
            ) from err
        result = fn(*args)
        if result_conn is not None:
            result_conn.send(result)
    except KeyboardInterrupt:
        code = 130
    except SciDevNNError as err:
        print(f"scidevnn.distributed: worker {rank}: {err}", file=sys.stderr, flush=True)
        code = 1
    except BaseException:  # a bug in fn: its traceback, then a non-zero exit
        print(f"scidevnn.distributed: worker {rank} failed:", file=sys.stderr)
        traceback.print_exc()
        sys.stderr.flush()
        code = 1
    if code == 0:
        shutdown()
        return
    # After a failed collective the group's destructor may wait on dead peers: leave now.
    sys.stdout.flush()
    os._exit(code)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "did not stop"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _stop(processes: list[Any], grace: float) -> None:
    """Wait up to ``grace`` s for the processes, then terminate, then kill what is left."""
    deadline = time.monotonic() + grace
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(5.0)
        if process.is_alive():
            process.kill()
            process.join()


def spawn(
    fn: Callable[..., R],
    nproc: int,
    *args: Any,
    backend: str | None = None,
    timeout: float | None = None,
    threads: int = 1,
) -> R:
    """Run ``fn(*args)`` in ``nproc`` worker processes joined in one process group.

    ``fn`` must be picklable (a module-level function). Returns rank 0's result. Raises
    ``DistributedError`` when a worker fails; the other workers are given a few seconds to
    stop by themselves (their collectives fail when a peer dies), then terminated.
    """
    if nproc < 1:
        raise ValueError(f"spawn: nproc must be >= 1, got {nproc}")
    if threads < 1:
        raise ValueError(f"spawn: threads must be >= 1, got {threads}")
    seconds = resolve_timeout(timeout)
    chosen = backend or default_backend()
    if chosen == "nccl" and nproc > torch.cuda.device_count():
        raise ValueError(
            f"spawn: {nproc} nccl workers need {nproc} GPUs, found {torch.cuda.device_count()}"
        )
    # The parent hosts the rendezvous store on a port the system picks: nothing can take it
    # between choosing and binding, and it outlives any single worker.
    store = dist.TCPStore(  # type: ignore[attr-defined]
        "127.0.0.1",
        0,
        nproc,
        is_master=True,
        wait_for_workers=False,
        timeout=datetime.timedelta(seconds=seconds),
    )
    context = torch_mp.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    processes = []
    for rank in range(nproc):
        process = context.Process(
            target=_worker_main,
            args=(
                rank,
                nproc,
                store.port,
                chosen,
                seconds,
                threads,
                fn,
                args,
                sender if rank == 0 else None,
            ),
            name=f"scidevnn-worker-{rank}",
        )
        process.start()
        processes.append(process)
    sender.close()

    result: Any = None
    reader_open = True
    failure: str | None = None
    running = {process.sentinel: rank for rank, process in enumerate(processes)}
    try:
        while running and failure is None:
            for ready in wait([*running, receiver] if reader_open else [*running]):
                if ready is receiver:
                    result, reader_open = _receive(receiver), False
                    continue
                rank = running.pop(cast(int, ready))
                processes[rank].join()
                code = processes[rank].exitcode
                if code != 0 and failure is None:
                    failure = f"worker {rank} of {nproc} {_describe_exit(code)}"
    except KeyboardInterrupt:
        _stop(processes, 0.0)
        raise
    finally:
        if failure is not None:
            _stop(processes, min(_GRACE_S, seconds))
    if failure is not None:
        receiver.close()
        raise DistributedError(f"data-parallel run stopped: {failure}")
    if reader_open and receiver.poll():
        result = _receive(receiver)
    receiver.close()
    return result  # type: ignore[no-any-return]


def _receive(receiver: Connection) -> Any:
    """Rank 0's result, or None when it closed the pipe without sending one."""
    try:
        return receiver.recv()
    except EOFError:
        return None
