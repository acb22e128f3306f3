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

import math
import os
import threading
import time
from dataclasses import asdict
from multiprocessing.queues import Queue
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
import torch.multiprocessing as torch_mp
from torch import Tensor

from mnist_cli.checkpoint import PartialEpoch
from mnist_cli.errors import AppError, TrainingDivergedError, TrainingInterrupted
from mnist_cli.inference import evaluate_loss_accuracy
from mnist_cli.preprocess import normalize
from mnist_cli.reporting import EpochStats, Reporter, SilentReporter
from mnist_cli.training import _InterruptFlag, _Run, stream_generator
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
        if self.rank != 0:
            self.reporter = SilentReporter()
        # Worker 0's BatchNorm running statistics are the ones saved: no need to broadcast
        # them before every step.
        self.parallel = sdist.DistributedDataParallel(self.model, broadcast_buffers=False)
        self.criterion = CrossEntropyLoss(reduction="none")
        self.stop = False  # Ctrl-C seen by any worker, agreed by all

    # -------------------------------------------------------------- worker 0 alone writes
    def _save(self) -> None:
        if self.rank == 0:
            super()._save()
        self.saved_epoch = self.state.epoch

    def _write_extras(self) -> None:
        if self.rank == 0:
            super()._write_extras()

    def _test(self) -> None:
        if self.rank == 0:
            super()._test()
        self.state.finished = True

    # -------------------------------------------------------------- the loop
    def _shard(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """This worker's images of a batch, and a loss weight per image (0 for padding)."""
        n = int(index.shape[0])
        sampler = sdist.DistributedSampler(n, self.world_size, self.rank, shuffle=False)
        positions = sampler.indices().to(index.device)
        slots = torch.arange(len(sampler), device=index.device) * self.world_size + self.rank
        weights = (slots < n).to(torch.float32) * (self.world_size / n)
        return index[positions], weights

    def run(self, interrupt: _InterruptFlag) -> None:
        for epoch in range(self.state.epoch + 1, self.config.epochs + 1):
            self._epoch(epoch, interrupt)
            self.epochs_run += 1
            if self.stop and epoch < self.config.epochs:
                raise TrainingInterrupted(
                    f"interrupted after epoch {epoch}: the checkpoint is in {self.out}; "
                    f"continue with: mnist-cli train --resume {self.out}"
                )

    def _epoch(self, epoch: int, interrupt: _InterruptFlag) -> None:
        config, state = self.config, self.state
        lr = config.lr_at(epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        order = torch.randperm(len(self.labels), generator=stream_generator(config.seed, epoch))
        order = order.to(self.device)
        partial = state.partial
        batches = self.batches
        self.reporter.start_epoch(epoch, config.epochs, batches, state.step)
        self.parallel.train()
        started = time.perf_counter()
        for step in range(state.step, batches):
            index = order[step * config.batch_size : (step + 1) * config.batch_size]
            shard, weights = self._shard(index)
            x = normalize(self.images[shard])
            y = self.labels[shard]
            self.optimizer.zero_grad()
            logits = self.parallel(x)
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
            self.parallel.backward(self.criterion.backward(weights.to(losses.dtype)))
            loss_sum, correct, stops = _finish_sum(summing, totals).tolist()
            count = int(index.shape[0])
            if not math.isfinite(loss_sum):  # every worker sees the same sum: all stop here
                raise TrainingDivergedError(
                    f"training stopped: the loss became {loss_sum / count} at epoch {epoch}, "
                    f"batch {step + 1}/{batches} (learning rate {lr:.3g}; try a smaller --lr); "
                    f"{self._kept()}"
                )
            self.optimizer.step()
            partial.loss_sum += loss_sum
            partial.correct += round(correct)
            partial.seen += count
            elapsed = time.perf_counter() - started
            self.reporter.update(
                step + 1,
                partial.loss_sum / partial.seen,
                partial.correct / partial.seen,
                partial.seen / max(partial.seconds + elapsed, 1e-9),
            )
            self.stop = stops > 0
            if self.stop and step + 1 < batches:
                partial.seconds += elapsed
                state.step = step + 1
                self._save()
                sdist.barrier()  # worker 0 has written the checkpoint
                raise TrainingInterrupted(
                    f"interrupted at epoch {epoch}, batch {step + 1}/{batches}: the checkpoint "
                    f"is in {self.out}; continue with: mnist-cli train --resume {self.out}"
                )
        partial.seconds += time.perf_counter() - started
        self._end_epoch(epoch, lr, partial)
        agreed = torch.tensor([float(interrupt.requested or self.stop)], dtype=torch.float64)
        self.stop = bool(_sum_over_workers(agreed.to(self.device)).item() > 0)

    def _end_epoch(self, epoch: int, lr: float, partial: PartialEpoch) -> None:
        """Validation, history, test after the last epoch, and the files (worker 0)."""
        val_loss = val_accuracy = None
        splits = self.splits
        if self.rank == 0 and splits.val_images is not None and splits.val_labels is not None:
            val_loss, val_accuracy = evaluate_loss_accuracy(
                self.model, splits.val_images, splits.val_labels, device=self.device
            )
        stats = EpochStats(
            epoch=epoch,
            loss=partial.loss_sum / max(partial.seen, 1),
            accuracy=partial.correct / max(partial.seen, 1),
            val_loss=val_loss,
            val_accuracy=val_accuracy,
            lr=lr,
            images_per_second=partial.seen / max(partial.seconds, 1e-9),
            seconds=partial.seconds,
        )
        state = self.state
        state.history.append(asdict(stats))
        state.epoch, state.step, state.partial = epoch, 0, PartialEpoch()
        if epoch == self.config.epochs:
            self._test()
        self._save()
        self._write_extras()
        self.reporter.end_epoch(stats)


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
