"""Training progress: a rich progress bar per epoch on a terminal, plain lines otherwise.

The training loop talks to a ``Reporter``; ``make_reporter`` picks the rich one when the console
is a terminal and the plain one when output goes to a file or a pipe (one line per epoch, plus
a progress line every ``PLAIN_INTERVAL`` seconds inside a long epoch).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

#: Seconds between progress lines inside an epoch when the output is not a terminal.
PLAIN_INTERVAL = 10.0


@dataclass(frozen=True)
class EpochStats:
    """What one finished epoch reports (also one line of the metrics file)."""

    epoch: int
    loss: float
    accuracy: float
    val_loss: float | None
    val_accuracy: float | None
    lr: float
    images_per_second: float
    seconds: float

    def summary(self) -> str:
        """``loss 0.1234  accuracy 96.50%  [val_loss ... val_accuracy ...]  lr ...``."""
        parts = [f"loss {self.loss:.4f}", f"accuracy {self.accuracy:.2%}"]
        if self.val_loss is not None and self.val_accuracy is not None:
            parts += [f"val_loss {self.val_loss:.4f}", f"val_accuracy {self.val_accuracy:.2%}"]
        parts += [f"lr {self.lr:.3g}", f"{self.images_per_second:,.0f} img/s"]
        return "  ".join(parts)


class Reporter(Protocol):
    """Receives the training loop's progress."""

    def start_epoch(self, epoch: int, epochs: int, batches: int, done: int) -> None:
        """Epoch ``epoch`` of ``epochs`` starts, ``done`` of its ``batches`` already run."""

    def update(self, done: int, loss: float, accuracy: float, images_per_second: float) -> None:
        """``done`` batches of the current epoch have run; running loss and accuracy."""

    def end_epoch(self, stats: EpochStats) -> None:
        """The current epoch is over."""

    def message(self, text: str) -> None:
        """A line to show between progress updates."""

    def close(self) -> None:
        """Training is over (normally or not)."""


class SilentReporter:
    """Reports nothing: the default for ``train_model`` called from Python."""

    def start_epoch(self, epoch: int, epochs: int, batches: int, done: int) -> None:
        pass

    def update(self, done: int, loss: float, accuracy: float, images_per_second: float) -> None:
        pass

    def end_epoch(self, stats: EpochStats) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


class PlainReporter:
    """One line per epoch (and one every ``interval`` seconds in a long one): for logs."""

    def __init__(self, console: Console, interval: float = PLAIN_INTERVAL) -> None:
        self.console = console
        self.interval = interval
        self._epoch = self._epochs = self._batches = 0
        self._last = 0.0

    def _print(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def start_epoch(self, epoch: int, epochs: int, batches: int, done: int) -> None:
        self._epoch, self._epochs, self._batches = epoch, epochs, batches
        self._last = time.monotonic()

    def update(self, done: int, loss: float, accuracy: float, images_per_second: float) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval and done < self._batches:
            self._last = now
            self._print(
                f"epoch {self._epoch}/{self._epochs}  batch {done}/{self._batches}  "
                f"loss {loss:.4f}  accuracy {accuracy:.2%}  {images_per_second:,.0f} img/s"
            )

    def end_epoch(self, stats: EpochStats) -> None:
        self._print(f"epoch {stats.epoch}/{self._epochs}  {stats.summary()}  {stats.seconds:.1f}s")

    def message(self, text: str) -> None:
        self._print(text)

    def close(self) -> None:
        pass


class RichReporter:
    """A live progress bar per epoch with loss, accuracy and images per second."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TextColumn("acc {task.fields[accuracy]:.2%}"),
            TextColumn("{task.fields[ips]:>7,.0f} img/s"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[extra]}"),
            console=console,
        )
        self._task: TaskID | None = None
        self._started = False

    def start_epoch(self, epoch: int, epochs: int, batches: int, done: int) -> None:
        if not self._started:
            self.progress.start()
            self._started = True
        width = len(str(epochs))
        self._task = self.progress.add_task(
            f"epoch {epoch:>{width}}/{epochs}",
            total=batches,
            completed=done,
            loss=float("nan"),
            accuracy=0.0,
            ips=0.0,
            extra="",
        )

    def update(self, done: int, loss: float, accuracy: float, images_per_second: float) -> None:
        if self._task is not None:
            self.progress.update(
                self._task, completed=done, loss=loss, accuracy=accuracy, ips=images_per_second
            )

    def end_epoch(self, stats: EpochStats) -> None:
        if self._task is None:
            return
        extra = ""
        if stats.val_loss is not None and stats.val_accuracy is not None:
            extra = f"val_loss {stats.val_loss:.4f} val_acc {stats.val_accuracy:.2%}"
        self.progress.update(
            self._task,
            loss=stats.loss,
            accuracy=stats.accuracy,
            ips=stats.images_per_second,
            extra=extra,
        )
        self._task = None

    def message(self, text: str) -> None:
        self.progress.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def close(self) -> None:
        if self._started:
            self.progress.stop()
            self._started = False


def make_reporter(console: Console) -> Reporter:
    """The rich reporter on a terminal, the plain one otherwise."""
    if console.is_terminal:
        return RichReporter(console)
    return PlainReporter(console)
