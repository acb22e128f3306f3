"""``mnist-cli``: train, run, evaluate, inspect and time SciDevNN networks on MNIST-format data.

Every command turns known errors (bad input, unusable files, missing plugins) into one line on
stderr and exit code 2; anything unexpected is exit code 1. ``SCIDEVNN_DEBUG=1`` adds the
traceback.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any, NoReturn, cast

import torch
import typer
from rich.console import Console
from rich.table import Table
from scidevnn.errors import SciDevNNError

from mnist_cli.data import Dataset, load_idx_bytes, load_images, resolve
from mnist_cli.data.datasets import DatasetName
from mnist_cli.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USER, AppError
from mnist_cli.files import check_output_path, write_text_atomic
from mnist_cli.inference import (
    NUM_CLASSES,
    Evaluation,
    Predictions,
    evaluate_predictions,
    infer_model,
    normalization_of,
    read_model,
    resolve_device,
)
from mnist_cli.models import MODELS, build_model
from mnist_cli.reporting import make_reporter
from mnist_cli.version import APP_VERSION

DEBUG_VARIABLE = "SCIDEVNN_DEBUG"

app = typer.Typer(
    name="mnist-cli",
    help="Train, run, evaluate and inspect SciDevNN networks on MNIST-format digits.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


class ModelChoice(str, Enum):
    mlp = "mlp"
    cnn = "cnn"
    lstm = "lstm"


class DatasetChoice(str, Enum):
    embedded = "embedded"
    mnist = "mnist"
    fashion = "fashion"


class OptimizerChoice(str, Enum):
    sgd = "sgd"
    adam = "adam"
    adamw = "adamw"


# --------------------------------------------------------------------- output and errors
def _stdout() -> Console:
    return Console(highlight=False)


def _stderr() -> Console:
    return Console(stderr=True, highlight=False)


def _say(console: Console, text: str) -> None:
    console.print(text, markup=False, soft_wrap=True)


def _debug() -> bool:
    return os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")


def _fail(message: str, code: int) -> NoReturn:
    if _debug():
        traceback.print_exc()
    _say(_stderr(), "error: " + " ".join(message.split()))
    raise typer.Exit(code)


@contextmanager
def _errors() -> Iterator[None]:
    """One line on stderr and the right exit code for every error a command can meet."""
    try:
        yield
    except typer.Exit:
        raise
    except AppError as exc:
        _fail(str(exc), exc.exit_code)
    except SciDevNNError as exc:  # model files, plugins, the data layer's DataError
        _fail(str(exc), EXIT_USER)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        _fail(f"{exc.strerror or exc}{where}", EXIT_USER)
    except KeyboardInterrupt:
        _fail("interrupted", EXIT_INTERRUPTED)
    except Exception as exc:
        _fail(
            f"internal error: {type(exc).__name__}: {exc} "
            f"(set {DEBUG_VARIABLE}=1 to see the traceback)",
            EXIT_INTERNAL,
        )


def _versions() -> str:
    parts = []
    for name in ("scidevnn-core", "scidevnn-cnn", "scidevnn-rnn"):
        try:
            parts.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{name} not installed")
    return f"mnist-cli {APP_VERSION} ({', '.join(parts)}, torch {torch.__version__})"


def _version_callback(value: bool) -> None:
    if value:
        _say(_stdout(), _versions())
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool | None,
        typer.Option(
            "--version",
            help="Show the versions of mnist-cli, SciDevNN and torch, then exit.",
            callback=_version_callback,
            is_eager=True,
        ),
    ] = None,
) -> None:
    """Train, run, evaluate and inspect SciDevNN networks on MNIST-format digits.

    Start with [bold]mnist-cli train[/bold]: it trains a small network on the real MNIST
    digits shipped with the app and writes model.h5.
    """


# --------------------------------------------------------------------- train
@app.command()
def train(
    model: Annotated[
        ModelChoice | None,
        typer.Option(
            "--model",
            "-m",
            help="Network: mlp (784-256-10), cnn (LeNet-5 with batch norm) or lstm (reads rows). "
            "[dim]\\[default: mlp][/dim]",
            show_default=False,
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(help="Folder of MNIST-layout IDX files (gzip or raw).", show_default=False),
    ] = None,
    dataset: Annotated[
        DatasetChoice | None,
        typer.Option(
            help="Named data: the embedded 4,000/1,000-digit sample, mnist (cache folder) or "
            "fashion (Debian's dataset-fashion-mnist). [dim]\\[default: embedded][/dim]",
            show_default=False,
        ),
    ] = None,
    download: Annotated[
        bool,
        typer.Option(help="With --dataset mnist: fetch the four MNIST files first."),
    ] = False,
    epochs: Annotated[
        int | None,
        typer.Option(
            help="Epochs in all (a resumed run counts those done). "
            "[dim]\\[default: mlp 10, cnn 15, lstm 15][/dim]",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size", "-b", help="Images per step. [dim]\\[default: 64][/dim]",
            show_default=False,
        ),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(
            help="Learning rate of the first epoch. [dim]\\[default: 0.002; sgd 0.05][/dim]",
            show_default=False,
        ),
    ] = None,
    lr_decay: Annotated[
        float | None,
        typer.Option(
            help="Multiply the learning rate by this after each epoch (1: constant). "
            "[dim]\\[default: 0.8][/dim]",
            show_default=False,
        ),
    ] = None,
    optimizer: Annotated[
        OptimizerChoice | None,
        typer.Option(
            help="sgd (momentum 0.9), adam or adamw. [dim]\\[default: adam][/dim]",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            help="Random seed: the same seed gives the same weights, bit for bit. "
            "[dim]\\[default: 0][/dim]",
            show_default=False,
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, or cuda when torch sees a GPU.")] = "cpu",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Model file, rewritten (atomically) after every epoch. "
            "[dim]\\[default: model.h5, or the --resume file][/dim]",
            show_default=False,
        ),
    ] = None,
    val_split: Annotated[
        float | None,
        typer.Option(
            help="Fraction of the training images held out to validate each epoch. "
            "[dim]\\[default: 0][/dim]",
            show_default=False,
        ),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            help="Continue from this checkpoint (any model file train wrote, even after "
            "Ctrl-C), exactly as if training had not stopped.",
            show_default=False,
        ),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(help="Also draw loss and accuracy curves to this PNG.", show_default=False),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(hidden=True, help="Use only N training (and N test) images."),
    ] = None,
) -> None:
    """Train a network; write the model file, a metrics file and the final test accuracy.

    With no options: the mlp on the embedded sample of real MNIST digits, into model.h5.
    A checkpoint is saved after every epoch; Ctrl-C saves one and stops.
    """
    from mnist_cli.training import train_model

    console = _stdout()
    with _errors():
        result = train_model(
            model.value if model else None,
            data=data,
            dataset=dataset.value if dataset else None,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            optimizer=optimizer.value if optimizer else None,
            lr_decay=lr_decay,
            seed=seed,
            val_split=val_split,
            limit=limit,
            device=device,
            out=out,
            resume=resume,
            plot=plot,
            download=download,
            reporter=make_reporter(console),
        )
        if result.test_accuracy is not None:
            _say(
                console,
                f"test accuracy {result.test_accuracy:.2%} (loss {result.test_loss:.4f}) on "
                f"{result.test_images:,} test images",
            )
        written = [str(result.path), str(result.metrics_path)]
        if result.plot_path is not None:
            written.append(str(result.plot_path))
        _say(console, "saved " + ", ".join(written))


# --------------------------------------------------------------------- data sources
def _source(
    images: list[str] | None, data: Path | None, dataset: DatasetChoice | None
) -> tuple[Dataset, list[str] | None]:
    """The images to classify and, for image files, their names."""
    given = [bool(images), data is not None or dataset is not None]
    if sum(given) == 0:
        raise AppError(
            "nothing to classify: give image files, --data DIR (IDX files), --dataset, "
            "or - to read IDX images from stdin"
        )
    if sum(given) > 1:
        raise AppError("give either image files (or -) or --data/--dataset, not both")
    if images:
        if "-" in images:
            if len(images) > 1:
                raise AppError("- (IDX on stdin) cannot be combined with image files")
            return _stdin_images(), None
        for name in images:
            if not Path(name).exists():
                raise AppError(f"{name}: no such image file")
        return load_images(images), list(images)
    name = cast(DatasetName | None, dataset.value if dataset else None)
    return resolve(name, data, False, "test"), None


def _stdin_images() -> Dataset:
    if sys.stdin.isatty():
        raise AppError("- reads IDX images from stdin, but stdin is a terminal (pipe a file in)")
    payload = sys.stdin.buffer.read()
    tensor = load_idx_bytes(payload, "<stdin>")
    return Dataset(tensor, None, "<stdin>")


def _evaluation_source(data: Path | None, dataset: DatasetChoice | None) -> Dataset:
    name = cast(DatasetName | None, dataset.value if dataset else None)
    return resolve(name, data, False, "test", require_labels=True)


# --------------------------------------------------------------------- infer
def _predictions_csv(predictions: Predictions) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    labels = predictions.labels
    header = ["index", "image", "class", "probability"]
    header += ["label"] if labels is not None else []
    header += [f"p{c}" for c in range(NUM_CLASSES)]
    writer.writerow(header)
    classes = predictions.classes.tolist()
    confidence = predictions.confidence.tolist()
    probabilities = predictions.probabilities.tolist()
    label_list = labels.tolist() if labels is not None else None
    for i, name in enumerate(predictions.names):
        row: list[Any] = [i, name, classes[i], f"{confidence[i]:.6f}"]
        row += [label_list[i]] if label_list is not None else []
        row += [f"{p:.6f}" for p in probabilities[i]]
        writer.writerow(row)
    return buffer.getvalue()


def _accuracy_line(predictions: Predictions) -> str | None:
    if predictions.labels is None or predictions.accuracy is None:
        return None
    correct = int((predictions.classes == predictions.labels).sum())
    return f"accuracy {predictions.accuracy:.2%} ({correct:,} of {len(predictions):,} correct)"


def _prediction_table(predictions: Predictions) -> Table:
    labelled = predictions.labels is not None
    table = Table(title="Predictions")
    table.add_column("#", justify="right")
    table.add_column("image")
    table.add_column("class", justify="right")
    table.add_column("probability", justify="right")
    if labelled:
        table.add_column("label", justify="right")
        table.add_column("ok")
    classes = predictions.classes.tolist()
    confidence = predictions.confidence.tolist()
    for i, name in enumerate(predictions.names):
        row = [str(i), name, str(classes[i]), f"{confidence[i]:.4f}"]
        if predictions.labels is not None:
            label = int(predictions.labels[i])
            row += [str(label), "yes" if label == classes[i] else "NO"]
        table.add_row(*row)
    return table


def _summary_table(predictions: Predictions) -> Table:
    table = Table(title=f"{len(predictions):,} images: predicted classes")
    table.add_column("class", justify="right")
    table.add_column("predicted", justify="right")
    table.add_column("mean probability", justify="right")
    labels = predictions.labels
    if labels is not None:
        table.add_column("true", justify="right")
    classes = predictions.classes
    confidence = predictions.confidence
    for c in range(NUM_CLASSES):
        chosen = classes == c
        count = int(chosen.sum())
        mean = f"{float(confidence[chosen].mean()):.4f}" if count else "-"
        row = [str(c), f"{count:,}", mean]
        if labels is not None:
            row.append(f"{int((labels == c).sum()):,}")
        table.add_row(*row)
    return table


@app.command()
def infer(
    model: Annotated[
        Path, typer.Argument(help="Model file written by mnist-cli train.", show_default=False)
    ],
    images: Annotated[
        list[str] | None,
        typer.Argument(
            help="Image files (PNG, JPEG, ... any size) to classify, or - for IDX on stdin.",
            show_default=False,
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(help="Folder of IDX files: classify its test images.", show_default=False),
    ] = None,
    dataset: Annotated[
        DatasetChoice | None,
        typer.Option(help="Classify the test images of a named dataset.", show_default=False),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Write every prediction to this CSV file.", show_default=False
        ),
    ] = None,
    show: Annotated[
        int, typer.Option(help="List each image up to this many; above it, print a summary.")
    ] = 20,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Images per batch.")] = 500,
    device: Annotated[str, typer.Option(help="cpu, or cuda when torch sees a GPU.")] = "cpu",
) -> None:
    """Classify digits: class and probability per image, accuracy when labels exist."""
    console = _stdout()
    with _errors():
        if output is not None:
            check_output_path(output, "CSV file")
        if batch_size < 1:
            raise AppError("--batch-size must be at least 1")
        target = resolve_device(device)
        net, stored = read_model(model, device=target)
        source, names = _source(images, data, dataset)
        predictions = infer_model(
            net,
            source,
            names=names,
            device=target,
            batch_size=batch_size,
            normalization=normalization_of(stored),
        )
        if len(predictions) <= show:
            console.print(_prediction_table(predictions))
        else:
            console.print(_summary_table(predictions))
        _say(console, f"{len(predictions):,} images from {source.name}")
        line = _accuracy_line(predictions)
        if line is not None:
            _say(console, line)
        if output is not None:
            write_text_atomic(output, _predictions_csv(predictions), "CSV file")
            _say(console, f"wrote {output}")
        elif len(predictions) > show:
            _say(console, "every prediction: --output FILE.csv")
