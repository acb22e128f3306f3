"""The training loop behind ``mnist-cli train`` and ``mnist_cli.train_model``.

Each epoch shuffles the training images with a generator seeded from (seed, epoch), runs
mini-batches of forward, cross-entropy, backward and one optimizer step, then writes a
checkpoint (model, optimizer state, progress, history) atomically over the output file, the
metrics file (JSON lines) and, if asked, the curves' PNG. Because nothing depends on the
process's history, training N epochs, stopping (or Ctrl-C in the middle of an epoch) and
resuming gives the same weights, bit for bit, as training straight through.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, cast

import torch
from torch import Tensor

from mnist_cli.checkpoint import (
    PartialEpoch,
    TrainConfig,
    TrainingState,
    read_checkpoint,
    save_checkpoint,
)
from mnist_cli.data import Dataset, resolve
from mnist_cli.data.datasets import DatasetName
from mnist_cli.errors import AppError, TrainingDivergedError, TrainingInterrupted
from mnist_cli.files import check_output_path, write_text_atomic
from mnist_cli.inference import evaluate_loss_accuracy, resolve_device
from mnist_cli.models import DEFAULT_LR, build_model, get_spec
from mnist_cli.plots import write_history_png
from mnist_cli.preprocess import NORMALIZATION, normalize
from mnist_cli.reporting import EpochStats, Reporter, SilentReporter
from scidevnn import SGD, Adam, AdamW, CrossEntropyLoss, Module, Optimizer

#: Optimizer option -> the class name stored in the model file.
OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "adam": Adam, "adamw": AdamW}
#: Options a resumed run may change; any other must match the checkpoint.
RESUMABLE_CHANGES = ("epochs", "lr", "data_dir", "plot")
#: How each configuration field is spelled on the command line (for messages).
OPTION_NAMES = {
    "model": "--model",
    "dataset": "--dataset",
    "data_dir": "--data",
    "epochs": "--epochs",
    "batch_size": "--batch-size",
    "lr": "--lr",
    "optimizer": "--optimizer",
    "lr_decay": "--lr-decay",
    "seed": "--seed",
    "val_split": "--val-split",
    "limit": "--limit",
    "plot": "--plot",
}
DEFAULT_OUT = Path("model.h5")


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced."""

    model: Module
    path: Path
    metrics_path: Path
    plot_path: Path | None
    config: TrainConfig
    history: list[dict[str, Any]]
    test_loss: float | None
    test_accuracy: float | None
    test_images: int
    epochs_run: int


def metrics_path_for(out: Path) -> Path:
    """``model.h5`` -> ``model.metrics.jsonl`` (next to the model file)."""
    return out.with_name(f"{out.stem if out.suffix else out.name}.metrics.jsonl")


def stream_generator(seed: int, stream: int) -> torch.Generator:
    """A CPU generator for one purpose: stream 0 splits the data, stream e shuffles epoch e."""
    return torch.Generator().manual_seed((seed * 1_000_003 + stream) % (1 << 63))


def make_optimizer(name: str, model: Module, lr: float) -> Optimizer:
    """``sgd`` (momentum 0.9), ``adam`` or ``adamw`` over the model's parameters."""
    if name == "sgd":
        return SGD(model.parameters(), lr=lr, momentum=0.9)
    if name == "adam":
        return Adam(model.parameters(), lr=lr)
    if name == "adamw":
        return AdamW(model.parameters(), lr=lr)
    raise AppError(f"unknown optimizer '{name}': choose one of {', '.join(OPTIMIZERS)}")


# --------------------------------------------------------------------- configuration
def _validate(config: TrainConfig) -> TrainConfig:
    get_spec(config.model)
    if config.optimizer not in OPTIMIZERS:
        raise AppError(
            f"unknown optimizer '{config.optimizer}': choose one of {', '.join(OPTIMIZERS)}"
        )
    checks = [
        (config.epochs >= 1, "--epochs must be at least 1"),
        (config.batch_size >= 1, "--batch-size must be at least 1"),
        (math.isfinite(config.lr) and config.lr > 0, "--lr must be a positive number"),
        (0 < config.lr_decay <= 1, "--lr-decay must be in (0, 1]"),
        (config.seed >= 0, "--seed must be 0 or more"),
        (0 <= config.val_split < 1, "--val-split must be in [0, 1)"),
        (config.limit is None or config.limit >= 1, "--limit must be at least 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise AppError(message)
    return config


def new_config(requested: dict[str, Any]) -> TrainConfig:
    """A fresh run's configuration: the options given, else the model's and optimizer's defaults."""
    spec = get_spec(requested.get("model", "mlp"))
    optimizer = requested.get("optimizer", "adam")
    values: dict[str, Any] = {
        "model": spec.name,
        "epochs": spec.epochs,
        "batch_size": spec.batch_size,
        "optimizer": optimizer,
        "lr": DEFAULT_LR.get(optimizer, 2e-3),
    }
    values.update(requested)
    return _validate(TrainConfig(**values))


def resumed_config(saved: TrainConfig, requested: dict[str, Any], path: Path) -> TrainConfig:
    """The checkpoint's configuration with the changes a resumed run may make."""
    model = requested.get("model")
    if model is not None and model != saved.model:
        raise AppError(
            f"{path} is a checkpoint of the {saved.model} model: it cannot resume training "
            f"--model {model} (leave --model out, or start a new run without --resume)"
        )
    for key, value in requested.items():
        if key in RESUMABLE_CHANGES or key == "model":
            continue
        if getattr(saved, key) != value:
            raise AppError(
                f"{OPTION_NAMES[key]} {value} differs from the checkpoint's "
                f"{getattr(saved, key)}: a resumed run keeps the checkpoint's settings "
                "(only --epochs, --lr, --data and --plot may change)"
            )
    changes = {key: requested[key] for key in RESUMABLE_CHANGES if key in requested}
    return _validate(replace(saved, **changes))


# --------------------------------------------------------------------- data
@dataclass(frozen=True)
class _Splits:
    train_images: Tensor
    train_labels: Tensor
    val_images: Tensor | None
    val_labels: Tensor | None
    test: Dataset | None
    source: str


def _labels(dataset: Dataset) -> Tensor:
    if dataset.labels is None:
        raise AppError(f"{dataset.name}: training needs labels, and this data has none")
    return dataset.labels


def _load_splits(config: TrainConfig, download: bool) -> _Splits:
    dataset = cast(DatasetName | None, config.dataset)
    train = resolve(dataset, config.data_dir, download, "train", require_labels=True)
    test = resolve(dataset, config.data_dir, False, "test", require_labels=True)
    labels = _labels(train)
    order = torch.randperm(len(train), generator=stream_generator(config.seed, 0))
    if config.limit is not None:
        order = order[: config.limit]
    n_val = round(len(order) * config.val_split)
    if config.val_split > 0:
        n_val = max(1, n_val)
    if n_val >= len(order):
        raise AppError(
            f"--val-split {config.val_split} leaves no training images out of {len(order)}"
        )
    val, kept = order[:n_val], order[n_val:]
    if config.limit is not None:
        test = Dataset(test.images[: config.limit], _labels(test)[: config.limit], test.name)
    return _Splits(
        train.images[kept],
        labels[kept],
        train.images[val] if n_val else None,
        labels[val] if n_val else None,
        test,
        train.name,
    )


# --------------------------------------------------------------------- Ctrl-C
class _InterruptFlag:
    """While active, the first Ctrl-C only sets ``requested``; a second one stops at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> _InterruptFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)


# --------------------------------------------------------------------- the run
@dataclass(frozen=True)
class StepResult:
    """One training step's totals over the whole batch (every worker's images together)."""

    #: The sum of the per-image losses; not finite when the run diverged (no step is taken).
    loss_sum: float
    correct: int
    count: int
    #: A Ctrl-C every worker agreed on during the step (a process alone reads its flag instead).
    stop_requested: bool = False


class _Run:
    """One training run: state, the loop, and what it writes after every epoch.

    The hooks a data-parallel run overrides (``mnist_cli.distributed_train``): ``_step`` (one
    batch's forward and backward), ``_stop_requested`` and ``_agree`` (the Ctrl-C decision),
    ``_validate``, ``_test``, ``_save``, ``_checkpoint_written`` and ``_write_extras`` (worker 0
    alone evaluates and writes), and ``network`` (the module the steps call).
    """

    def __init__(
        self,
        config: TrainConfig,
        model: Module,
        optimizer: Optimizer,
        state: TrainingState,
        splits: _Splits,
        device: torch.device,
        out: Path,
        plot: Path | None,
        reporter: Reporter,
        saved_epoch: int | None,
    ) -> None:
        self.config = config
        self.model = model
        #: The module each step calls: the model itself, or a wrapper around it.
        self.network: Module = model
        self.optimizer = optimizer
        self.state = state
        self.splits = splits
        self.device = device
        self.out = out
        self.metrics_path = metrics_path_for(out)
        self.plot = plot
        self.reporter = reporter
        #: The epoch whose checkpoint ``out`` holds now (None: nothing written there yet).
        self.saved_epoch = saved_epoch
        self.criterion = CrossEntropyLoss()
        self.images = splits.train_images.to(device)
        self.labels = splits.train_labels.to(device)
        self.epochs_run = 0
        self.stop = False  # Ctrl-C seen (in a group: by any worker, agreed by all)

    @property
    def batches(self) -> int:
        return math.ceil(len(self.labels) / self.config.batch_size)

    def _save(self) -> None:
        save_checkpoint(
            self.out, self.model, self.optimizer, self.config, self.state, NORMALIZATION
        )
        self.saved_epoch = self.state.epoch

    def _checkpoint_written(self) -> None:
        """After the mid-epoch checkpoint of a Ctrl-C, before the run stops."""

    def _kept(self) -> str:
        if self.saved_epoch is None:
            return "no model file was written"
        return f"{self.out} still holds the last good checkpoint (epoch {self.saved_epoch})"

    def _write_extras(self) -> None:
        lines = "".join(json.dumps(row) + "\n" for row in self.state.history)
        write_text_atomic(self.metrics_path, lines, "metrics file")
        if self.plot is not None:
            title = f"{self.config.model} on {self.splits.source}"
            write_history_png(self.plot, self.state.history, title)

    def run(self, interrupt: _InterruptFlag) -> None:
        for epoch in range(self.state.epoch + 1, self.config.epochs + 1):
            self._epoch(epoch, interrupt)
            self.epochs_run += 1
            if self.stop and epoch < self.config.epochs:
                raise TrainingInterrupted(
                    f"interrupted after epoch {epoch}: the checkpoint is in {self.out}; "
                    f"continue with: mnist-cli train --resume {self.out}"
                )

    def _step(self, index: Tensor, interrupt: _InterruptFlag) -> StepResult:
        """Forward and backward of the batch ``index`` (gradients zeroed, no optimizer step)."""
        x = normalize(self.images[index])
        y = self.labels[index]
        logits = self.network(x)
        loss = float(self.criterion(logits, y))
        count = int(index.shape[0])
        if not math.isfinite(loss):  # no backward: the loop stops the run
            self.network.clear_saved()
            self.criterion.clear_saved()
            return StepResult(loss * count, 0, count)
        self.network.backward(self.criterion.backward())
        return StepResult(loss * count, int((logits.argmax(1) == y).sum()), count)

    def _stop_requested(self, result: StepResult, interrupt: _InterruptFlag) -> bool:
        """Whether to stop after this step (read after its report, which may press Ctrl-C)."""
        return interrupt.requested

    def _agree(self, stop: bool) -> bool:
        """Whether to stop after the epoch, given this process's wish (a group's: any's)."""
        return stop

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
        self.network.train()
        started = time.perf_counter()
        for step in range(state.step, batches):
            index = order[step * config.batch_size : (step + 1) * config.batch_size]
            self.optimizer.zero_grad()
            result = self._step(index, interrupt)
            if not math.isfinite(result.loss_sum):  # in a group every worker stops here
                raise TrainingDivergedError(
                    f"training stopped: the loss became {result.loss_sum / result.count} at "
                    f"epoch {epoch}, batch {step + 1}/{batches} (learning rate {lr:.3g}; try a "
                    f"smaller --lr); {self._kept()}"
                )
            self.optimizer.step()
            partial.loss_sum += result.loss_sum
            partial.correct += result.correct
            partial.seen += result.count
            elapsed = time.perf_counter() - started
            self.reporter.update(
                step + 1,
                partial.loss_sum / partial.seen,
                partial.correct / partial.seen,
                partial.seen / max(partial.seconds + elapsed, 1e-9),
            )
            self.stop = self._stop_requested(result, interrupt)
            if self.stop and step + 1 < batches:
                partial.seconds += elapsed
                state.step = step + 1
                self._save()
                self._checkpoint_written()
                raise TrainingInterrupted(
                    f"interrupted at epoch {epoch}, batch {step + 1}/{batches}: the checkpoint "
                    f"is in {self.out}; continue with: mnist-cli train --resume {self.out}"
                )
        partial.seconds += time.perf_counter() - started
        val_loss, val_accuracy = self._validate()
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
        state.history.append(asdict(stats))
        state.epoch, state.step, state.partial = epoch, 0, PartialEpoch()
        if epoch == config.epochs:
            self._test()
        self._save()
        self._write_extras()
        self.reporter.end_epoch(stats)
        self.stop = self._agree(interrupt.requested or self.stop)

    def _validate(self) -> tuple[float | None, float | None]:
        """Loss and accuracy on the validation images (None, None without them)."""
        if self.splits.val_images is None or self.splits.val_labels is None:
            return None, None
        return evaluate_loss_accuracy(
            self.model, self.splits.val_images, self.splits.val_labels, device=self.device
        )

    def _test(self) -> None:
        self.state.finished = True
        test = self.splits.test
        if test is None or test.labels is None or len(test) == 0:
            return
        loss, accuracy = evaluate_loss_accuracy(
            self.model, test.images, test.labels, device=self.device
        )
        self.state.test_loss, self.state.test_accuracy = loss, accuracy


def _requested(**options: Any) -> dict[str, Any]:
    names = {f.name for f in fields(TrainConfig)}
    return {key: value for key, value in options.items() if value is not None and key in names}


def train_model(
    model: str | None = None,
    *,
    data: str | os.PathLike[str] | None = None,
    dataset: str | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    optimizer: str | None = None,
    lr_decay: float | None = None,
    seed: int | None = None,
    val_split: float | None = None,
    limit: int | None = None,
    device: str = "cpu",
    out: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | None = None,
    plot: str | os.PathLike[str] | None = None,
    download: bool = False,
    reporter: Reporter | None = None,
    nproc: int = 1,
) -> TrainResult:
    """Train ``model`` (``mlp``, ``cnn`` or ``lstm``; default ``mlp``) and save it.

    Data: the folder ``data`` (MNIST-layout IDX files) or the named ``dataset`` (``embedded``
    by default, ``mnist`` with ``download=True`` to fetch it, ``fashion``). Options left as
    None take the model's defaults (or, with ``resume``, the checkpoint's values: only
    ``epochs``, ``lr``, ``data`` and ``plot`` may differ from them). ``epochs`` is the total to
    reach, counting those already in a resumed checkpoint.

    Writes ``out`` (default ``model.h5``, or the ``resume`` file) after every epoch: a
    checkpoint that ``resume`` continues exactly; ``<out stem>.metrics.jsonl`` with one JSON
    line per epoch; and the curves as a PNG when ``plot`` is given (recorded in the checkpoint:
    a resumed run keeps drawing them there unless given another ``plot``). Raises ``AppError``
    (one line) for bad options, ``TrainingDivergedError`` when the loss is not finite and
    ``TrainingInterrupted`` after Ctrl-C (a checkpoint saved), ``DataError`` for bad data and
    ``ModelFileError`` for a bad checkpoint.

    ``nproc`` > 1 runs the same training data-parallel in that many worker processes (see
    ``mnist_cli.distributed_train``; call it under ``if __name__ == "__main__":``).
    """
    if nproc != 1:  # the arguments as given, before any other local name exists
        options = {
            key: value for key, value in locals().items() if key not in ("nproc", "reporter")
        }
        from mnist_cli.distributed_train import train_parallel

        return train_parallel(nproc, options, reporter or SilentReporter())
    reporter = reporter or SilentReporter()
    requested = _requested(
        model=model,
        dataset=dataset,
        data_dir=os.path.abspath(data) if data is not None else None,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer,
        lr_decay=lr_decay,
        seed=seed,
        val_split=val_split,
        limit=limit,
        plot=os.path.abspath(plot) if plot is not None else None,
    )
    target = resolve_device(device)
    resume_path = Path(resume) if resume is not None else None
    out_path = Path(out) if out is not None else (resume_path or DEFAULT_OUT)
    plot_path = Path(plot) if plot is not None else None
    check_output_path(out_path, "model file")
    check_output_path(metrics_path_for(out_path), "metrics file")
    if plot_path is not None:
        check_output_path(plot_path, "plot")

    if resume_path is not None:
        loaded = read_checkpoint(resume_path, device=str(target))
        config = resumed_config(loaded.config, requested, resume_path)
        state = loaded.state
        if state.epoch >= config.epochs:
            raise AppError(
                f"{resume_path} already holds {state.epoch} trained epoch(s): pass --epochs N "
                f"with N > {state.epoch} to train further"
            )
        state.finished, state.test_loss, state.test_accuracy = False, None, None
        net = loaded.model
        expected = OPTIMIZERS[config.optimizer].__name__
        if loaded.optimizer_type not in (None, expected):
            raise AppError(
                f"{resume_path}: the optimizer state is for {loaded.optimizer_type}, but the "
                f"checkpoint's configuration says {config.optimizer}"
            )
        opt = make_optimizer(config.optimizer, net, config.lr)
        opt.load_state_dict(loaded.optimizer_state)
        if loaded.rng_state is not None:
            torch.set_rng_state(loaded.rng_state)
        same_file = out_path.resolve() == resume_path.resolve()
        saved_epoch = state.epoch if same_file else None
    else:
        config = new_config(requested)
        state = TrainingState()
        saved_epoch = None

    if plot_path is None and config.plot is not None:  # the plot the resumed run drew
        plot_path = Path(config.plot)
        try:
            check_output_path(plot_path, "plot")
        except AppError as exc:
            raise AppError(
                f"{exc} (the plot recorded in {resume_path}: give --plot to draw it elsewhere)"
            ) from None

    splits = _load_splits(config, download)
    if resume_path is None:
        torch.manual_seed(config.seed)
        net = build_model(config.model)
        net.to(device=target)
        opt = make_optimizer(config.optimizer, net, config.lr)
    net.needs_input_grad = False  # the first layer's input is data: no gradient needed

    from mnist_cli.distributed_train import run_class  # data-parallel inside a process group
    from scidevnn.distributed import is_main_process

    run_type = run_class()
    if not is_main_process():  # under torchrun: worker 0 alone reports
        reporter = SilentReporter()
    parameters = sum(p.numel() for p in net.parameters())
    spec = get_spec(config.model)
    where = ""
    if resume_path is not None:  # the position the Ctrl-C message named
        batches = math.ceil(len(splits.train_labels) / config.batch_size)
        where = (
            f"; resuming epoch {state.epoch + 1} after batch {state.step}/{batches}"
            if state.step
            else f"; resuming after epoch {state.epoch}"
        )
    reporter.message(
        f"{'Resuming' if resume_path else 'Training'} {config.model} ({spec.description}, "
        f"{parameters:,} parameters) on {splits.source}: {len(splits.train_labels):,} training "
        + (f"+ {len(splits.val_labels):,} validation " if splits.val_labels is not None else "")
        + ("image" if len(splits.train_labels) == 1 and splits.val_labels is None else "images")
        + f"; {config.optimizer} lr {config.lr:g}"
        + (f" x{config.lr_decay:g}/epoch" if config.lr_decay != 1 else "")
        + f", batch {config.batch_size}, {config.epochs} epoch{'s' if config.epochs > 1 else ''}"
        + f", seed {config.seed}, {target}"
        + where
    )
    run = run_type(
        config, net, opt, state, splits, target, out_path, plot_path, reporter, saved_epoch
    )
    try:
        with _InterruptFlag() as interrupt:
            run.run(interrupt)
    except KeyboardInterrupt:
        raise TrainingInterrupted(f"interrupted: {run._kept()}") from None
    finally:
        reporter.close()
    test = splits.test
    return TrainResult(
        model=net,
        path=out_path,
        metrics_path=run.metrics_path,
        plot_path=plot_path,
        config=config,
        history=list(state.history),
        test_loss=state.test_loss,
        test_accuracy=state.test_accuracy,
        test_images=len(test) if test is not None else 0,
        epochs_run=run.epochs_run,
    )
