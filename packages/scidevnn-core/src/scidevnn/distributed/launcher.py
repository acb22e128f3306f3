"""``spawn``: start the workers of a data-parallel run on this machine (no ``torchrun`` needed).

``spawn(fn, nproc, *args)`` starts ``nproc`` processes (the ``spawn`` start method), hosts the
rendezvous store in the parent on 127.0.0.1 and a port the system picks (nothing can take the
port between choosing and binding it), sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT`` in each worker as torchrun does, joins the process group,
limits each worker to ``threads`` intra-op threads and calls ``fn(*args)``. It returns rank 0's
result.

Failures come back to the caller as exceptions:

- an exception raised by ``fn`` in a worker is re-raised by ``spawn`` (the first worker's that is
  not a ``DistributedError``: the cause rather than its echo in the peers);
- a worker that dies (a signal, ``os._exit``) becomes a ``DistributedError`` naming it and how;
- after the first failure the other workers get ``FAILURE_GRACE_S`` to stop by themselves (their
  collectives fail as soon as a peer is gone), then they are terminated.

Ctrl-C reaches the workers too (same terminal): ``spawn`` gives them ``INTERRUPT_GRACE_S`` to
finish what they do on an interrupt (save a checkpoint, say) and re-raises what they raise, or
``KeyboardInterrupt``; a second Ctrl-C stops them at once.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import pickle
import signal
import sys
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any, TypeVar

import torch
import torch.distributed as dist
import torch.multiprocessing as torch_mp

from scidevnn.distributed.group import default_backend, join_error, resolve_timeout, shutdown
from scidevnn.errors import DistributedError, SciDevNNError

R = TypeVar("R")

#: After one worker fails, how long the others get to stop by themselves before ``terminate``.
FAILURE_GRACE_S = 10.0
#: After Ctrl-C, how long the workers get to stop by themselves.
INTERRUPT_GRACE_S = 60.0

_Report = tuple[str, Any]  # ("result", value) or ("error", exception)


def _send(conn: Connection, kind: str, value: Any) -> bool:
    """Send a report by value: plain pickle, not torch's shared-memory tensors, whose file
    descriptors could no longer be fetched once this worker has exited."""
    try:
        data = pickle.dumps((kind, value))
    except Exception:  # the value does not pickle
        return False
    with contextlib.suppress(OSError):  # the parent is gone: nobody to tell
        conn.send_bytes(data)
    return True


def _worker_main(
    rank: int,
    nproc: int,
    port: int,
    backend: str,
    timeout: float,
    threads: int,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    conn: Connection,
) -> None:
    """One worker: environment, threads, process group, ``fn``; its outcome goes to ``conn``."""
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
    try:
        if backend == "nccl":
            torch.cuda.set_device(rank)
        limit = datetime.timedelta(seconds=timeout)
        try:
            store = dist.TCPStore(  # type: ignore[attr-defined]
                "127.0.0.1", port, nproc, is_master=False, timeout=limit
            )
            dist.init_process_group(
                backend, store=store, rank=rank, world_size=nproc, timeout=limit
            )
        except (RuntimeError, ValueError) as err:
            where = f"127.0.0.1:{port}"
            raise DistributedError(join_error(rank, nproc, where, timeout, err)) from err
        result = fn(*args)
    except KeyboardInterrupt:
        sys.stdout.flush()
        os._exit(130)
    except BaseException as err:
        if not isinstance(err, SciDevNNError):  # a bug: keep its traceback
            print(f"worker {rank} of {nproc} failed:", file=sys.stderr)
            traceback.print_exc()
        err.add_note(f"(raised in worker {rank} of {nproc})")
        if not _send(conn, "error", err):
            _send(conn, "error", DistributedError(f"worker {rank}: {type(err).__name__}: {err}"))
        # After a failed collective the group's destructor may wait on dead peers: leave now.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    if not _send(conn, "result", result if rank == 0 else None):
        message = f"worker {rank}: its result, a {type(result).__name__}, cannot be pickled"
        _send(conn, "error", DistributedError(message))
        os._exit(1)
    conn.close()
    shutdown()


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "did not stop"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _receive(receiver: Connection) -> _Report | None:
    """A worker's report; None when it closed the pipe without one (it died)."""
    try:
        data = receiver.recv_bytes()
    except (EOFError, OSError):
        return None
    report: _Report = pickle.loads(data)
    return report


class _Supervisor:
    """Watches the workers and collects what each reports, until all have stopped."""

    def __init__(self, processes: list[Any], receivers: list[Connection]) -> None:
        self.processes = processes
        self.reports: dict[int, _Report] = {}
        self.codes: dict[int, int | None] = {}
        self.stopped_by_us: set[int] = set()
        self.interrupted = False
        self._receivers: dict[Any, int] = {r: rank for rank, r in enumerate(receivers)}
        self._running: dict[Any, int] = {p.sentinel: rank for rank, p in enumerate(processes)}
        self._deadline: float | None = None

    def _extend(self, seconds: float) -> None:
        limit = time.monotonic() + seconds
        self._deadline = limit if self._deadline is None else min(self._deadline, limit)

    def _handle(self, ready: list[Any]) -> None:
        for item in ready:
            if item in self._receivers:
                rank = self._receivers.pop(item)
                report = _receive(item)
                if report is not None:
                    self.reports[rank] = report
                continue
            rank = self._running.pop(item)
            self.processes[rank].join()
            self.codes[rank] = self.processes[rank].exitcode
            if self.codes[rank] != 0:
                self._extend(FAILURE_GRACE_S)

    def watch(self) -> None:
        while self._running:
            remaining = None if self._deadline is None else self._deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            try:
                self._handle(wait([*self._running, *self._receivers], remaining))
            except KeyboardInterrupt:
                if self.interrupted:
                    break  # a second Ctrl-C: stop them now
                self.interrupted = True
                self._extend(INTERRUPT_GRACE_S)
        self._stop_the_rest()

    def _stop_the_rest(self) -> None:
        for rank in self._running.values():
            self.stopped_by_us.add(rank)
            self.processes[rank].terminate()
        for sentinel, rank in list(self._running.items()):
            process = self.processes[rank]
            process.join(5.0)
            if process.is_alive():
                process.kill()
                process.join()
            self.codes[rank] = process.exitcode
            del self._running[sentinel]
        for receiver, rank in list(self._receivers.items()):
            if receiver.poll():
                report = _receive(receiver)
                if report is not None:
                    self.reports[rank] = report

    def outcome(self, nproc: int) -> Any:
        """Rank 0's result, or the exception that best explains why the run stopped."""
        errors = [(rank, value) for rank, (kind, value) in sorted(self.reports.items())
                  if kind == "error"]  # fmt: skip
        if not errors and all(code == 0 for code in self.codes.values()):
            return self.reports.get(0, ("result", None))[1]
        for _, error in errors:
            if not isinstance(error, DistributedError):
                raise error  # the cause, not its echo in the other workers
        if self.interrupted:
            raise KeyboardInterrupt
        for rank, code in sorted(self.codes.items()):
            if code != 0 and rank not in self.reports and rank not in self.stopped_by_us:
                raise DistributedError(
                    f"data-parallel run stopped: worker {rank} of {nproc} {_describe_exit(code)}"
                )
        if errors:
            raise errors[0][1]
        raise DistributedError("data-parallel run stopped: the workers did not finish in time")


def spawn(
    fn: Callable[..., R],
    nproc: int,
    *args: Any,
    backend: str | None = None,
    timeout: float | None = None,
    threads: int = 1,
) -> R:
    """Run ``fn(*args)`` in ``nproc`` worker processes joined in one process group.

    ``fn`` and ``args`` must pickle (``fn`` a module-level function); ``backend`` defaults to
    nccl with CUDA, else gloo; ``timeout`` (seconds) bounds joining and every collective.
    Returns rank 0's result; raises what a worker raised, or ``DistributedError``.
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
    store = dist.TCPStore(  # type: ignore[attr-defined]
        "127.0.0.1",
        0,
        nproc,
        is_master=True,
        wait_for_workers=False,
        timeout=datetime.timedelta(seconds=seconds),
    )
    context = torch_mp.get_context("spawn")
    processes: list[Any] = []
    receivers: list[Connection] = []
    try:
        for rank in range(nproc):
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(
                target=_worker_main,
                args=(rank, nproc, store.port, chosen, seconds, threads, fn, args, sender),
                name=f"scidevnn-worker-{rank}",
            )
            process.start()
            sender.close()
            processes.append(process)
            receivers.append(receiver)
        supervisor = _Supervisor(processes, receivers)
        supervisor.watch()
    except BaseException:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join()
        raise
    finally:
        for receiver in receivers:
            receiver.close()
        del store
    result: R = supervisor.outcome(nproc)
    return result
