"""``mnist-cli train --nproc N``: the same training run, split over N worker processes.

The run stays the one-process run: every epoch has the same batches (the order drawn from
(seed, epoch), ``batch_size`` images per step), and each batch is dealt out across the workers
the way ``DistributedSampler`` deals out an epoch (worker r takes positions r, r + N, ...; when
N does not divide the batch, the first images are repeated with weight 0). Each worker weighs
its images' losses by N / (batch size) and ``DistributedDataParallel`` averages the gradients,
so every step is the one-process step over the whole batch. (BatchNorm normalises with each
worker's own images, as torch's DDP does, so the cnn's numbers differ slightly.)

Worker 0 alone evaluates, writes the model file, checkpoints, metrics and plot, and reports
progress, with the images per second of all workers together; the parent process shows it.
Checkpoints count epochs and whole batches, so a run resumes with any number of workers, even
from a mid-epoch Ctrl-C checkpoint. ``torchrun --nproc-per-node N -m mnist_cli train ...`` works
too: ``train_model`` joins the process group torchrun describes.

A worker that dies stops the run within ``SCIDEVNN_DIST_TIMEOUT`` seconds (default 300) at the
latest, usually at once, with a one-line error; the last checkpoint stays.
"""

from __future__ import annotations

import os
import threading
import time
from multiprocessing.queues import Queue
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
import torch.multiprocessing as torch_mp
from torch import Tensor

from mnist_cli.errors import AppError
from mnist_cli.preprocess import normalize
from mnist_cli.reporting import EpochStats, Reporter, SilentReporter
from mnist_cli.training import StepResult, _InterruptFlag, _Run
from scidevnn import CrossEntropyLoss
from scidevnn import distributed as sdist
from scidevnn.distributed.group import collective_failed

if TYPE_CHECKING:
    from mnist_cli.training import TrainResult

#: Seconds between two progress updates sent from worker 0 to the parent.
UPDATE_INTERVAL = 0.1


def run_class() -> type[_Run]:
    """The training loop for this process: data-parallel inside a process group of 2 or more.

    Joins the group a ``torchrun`` environment describes (a no-op under ``--nproc``, which
    starts the group itself, and in a plain single process).
    """
    if sdist.init_from_env().world_size > 1:
        return DistributedRun
    return _Run


def _start_sum(values: Tensor) -> Any:
    """Launch the sum of ``values`` over the workers (in place); ``_finish_sum`` waits."""
    try:
        return dist.all_reduce(values, async_op=True)
    except RuntimeError as err:
        raise collective_failed("the training statistics' all-reduce", err) from err


def _finish_sum(work: Any, values: Tensor) -> Tensor:
    try:
        work.wait()
    except RuntimeError as err:
        raise collective_failed("the training statistics' all-reduce", err) from err
    return values


def _sum_over_workers(values: Tensor) -> Tensor:
    return _finish_sum(_start_sum(values), values)


class DistributedRun(_Run):
    """``_Run`` with each batch split over the workers and worker 0 alone writing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rank, self.world_size = sdist.get_rank(), sdist.get_world_size()
        # Worker 0's BatchNorm running statistics are the ones saved: no need to broadcast
        # them before every step.
        self.network = sdist.DistributedDataParallel(self.model, broadcast_buffers=False)
        self.criterion = CrossEntropyLoss(reduction="none")

    # -------------------------------------------------------------- worker 0 alone writes
    def _save(self) -> None:
        if self.rank == 0:
            super()._save()
        self.saved_epoch = self.state.epoch

    def _checkpoint_written(self) -> None:
        sdist.barrier()  # worker 0 has written the checkpoint

    def _write_extras(self) -> None:
        if self.rank == 0:
            super()._write_extras()

    def _validate(self) -> tuple[float | None, float | None]:
        return super()._validate() if self.rank == 0 else (None, None)

    def _test(self) -> None:
        if self.rank == 0:
            super()._test()
        self.state.finished = True

    # -------------------------------------------------------------- one step, split
    def _shard(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """This worker's images of a batch, and a loss weight per image (0 for padding)."""
        n = int(index.shape[0])
        sampler = sdist.DistributedSampler(n, self.world_size, self.rank, shuffle=False)
        positions = sampler.indices().to(index.device)
        slots = torch.arange(len(sampler), device=index.device) * self.world_size + self.rank
        weights = (slots < n).to(torch.float32) * (self.world_size / n)
        return index[positions], weights

    def _step(self, index: Tensor, interrupt: _InterruptFlag) -> StepResult:
        """This worker's share of the batch; the totals (and Ctrl-C) summed over the workers."""
        shard, weights = self._shard(index)
        x = normalize(self.images[shard])
        y = self.labels[shard]
        logits = self.network(x)
        losses = self.criterion(logits, y)
        real = weights > 0
        flag = torch.tensor(float(interrupt.requested), dtype=torch.float64)
        totals = torch.stack(
            [
                (losses * real).sum().double(),
                ((logits.argmax(1) == y) & real).sum().double(),
                flag.to(losses.device),
            ]
        )
        summing = _start_sum(totals)  # travels while the backward runs
        self.network.backward(self.criterion.backward(weights.to(losses.dtype)))
        loss_sum, correct, stops = _finish_sum(summing, totals).tolist()
        # every worker sees the same sums: a non-finite loss stops them all at this step
        return StepResult(loss_sum, round(correct), int(index.shape[0]), stops > 0)

    def _stop_requested(self, result: StepResult, interrupt: _InterruptFlag) -> bool:
        return result.stop_requested

    def _agree(self, stop: bool) -> bool:
        agreed = torch.tensor([float(stop)], dtype=torch.float64)
        return bool(_sum_over_workers(agreed.to(self.device)).item() > 0)


# ------------------------------------------------------------------ the parent's side
class QueueReporter:
    """Worker 0's reporter: sends each event to the parent, whose reporter shows it."""

    def __init__(self, queue: Queue[Any]) -> None:
        self.queue = queue
        self._batches = 0
        self._last = 0.0

    def start_epoch(self, epoch: int, epochs: int, batches: int, done: int) -> None:
        self._batches = batches
        self.queue.put(("start_epoch", (epoch, epochs, batches, done)))

    def update(self, done: int, loss: float, accuracy: float, images_per_second: float) -> None:
        now = time.monotonic()
        if done >= self._batches or now - self._last >= UPDATE_INTERVAL:
            self._last = now
            self.queue.put(("update", (done, loss, accuracy, images_per_second)))

    def end_epoch(self, stats: EpochStats) -> None:
        self.queue.put(("end_epoch", (stats,)))

    def message(self, text: str) -> None:
        self.queue.put(("message", (text,)))

    def close(self) -> None:
        pass


def _forward_reports(queue: Queue[Any], reporter: Reporter) -> None:
    """Parent thread: replay worker 0's reports until ``None`` arrives."""
    while (item := queue.get()) is not None:
        name, args = item
        getattr(reporter, name)(*args)


def _worker(options: dict[str, Any], queue: Queue[Any], threads: int) -> TrainResult:
    """One worker: ``train_model`` with the options, inside the process group ``spawn`` made."""
    from mnist_cli.training import train_model

    info = sdist.current_worker()
    reporter: Reporter = SilentReporter()
    if info.is_main:
        reporter = QueueReporter(queue)
        reporter.message(
            f"data-parallel: {info.world_size} workers ({info.backend}, {threads} thread(s) "
            "each), every batch split across them"
        )
    return train_model(**options, reporter=reporter)


def train_parallel(nproc: int, options: dict[str, Any], reporter: Reporter) -> TrainResult:
    """``train_model(**options)`` run by ``nproc`` workers; worker 0's result and errors.

    The workers share the machine's cores (``os.cpu_count() // nproc`` threads each).
    """
    if nproc < 1:
        raise AppError(f"--nproc must be at least 1, got {nproc}")
    device = torch.device(options.get("device") or "cpu")
    backend = "gloo"
    if device.type == "cuda" and dist.is_nccl_available():
        if torch.cuda.device_count() < nproc:
            raise AppError(
                f"--nproc {nproc} with --device cuda needs {nproc} GPUs; this machine has "
                f"{torch.cuda.device_count()}"
            )
        backend = "nccl"
    threads = max(1, (os.cpu_count() or 1) // nproc)
    queue: Queue[Any] = torch_mp.get_context("spawn").Queue()
    forwarder = threading.Thread(target=_forward_reports, args=(queue, reporter), daemon=True)
    forwarder.start()
    try:
        result: TrainResult = sdist.spawn(
            _worker, nproc, options, queue, threads, backend=backend, threads=threads
        )
    finally:
        queue.put(None)
        forwarder.join(timeout=5.0)
        reporter.close()
    return result
