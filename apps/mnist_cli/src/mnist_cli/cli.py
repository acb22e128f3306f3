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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any, NoReturn

import torch
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mnist_cli.data import Dataset, load_idx_bytes, load_images, resolve
from mnist_cli.data.datasets import DatasetName
from mnist_cli.errors import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_USER,
    AppError,
    TrainingInterrupted,
)
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
from mnist_cli.sources import class_names, load_recorded, recorded_data, recorded_note
from mnist_cli.version import APP_VERSION
from scidevnn.errors import SciDevNNError

DEBUG_VARIABLE = "SCIDEVNN_DEBUG"

app = typer.Typer(
    name="mnist-cli",
    help="Train, run, evaluate and inspect SciDevNN networks on MNIST-format digits.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


class ModelChoice(StrEnum):
    mlp = "mlp"
    cnn = "cnn"
    lstm = "lstm"


class DatasetChoice(StrEnum):
    embedded = "embedded"
    mnist = "mnist"
    fashion = "fashion"


class OptimizerChoice(StrEnum):
    sgd = "sgd"
    adam = "adam"
    adamw = "adamw"


# --------------------------------------------------------------------- output and errors
def _stdout() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        # a file or a pipe: wide enough that tables do not wrap (80 columns by default)
        console = Console(highlight=False, width=120)
    return console


def _stderr() -> Console:
    return Console(stderr=True, highlight=False)


def _say(console: Console, text: str) -> None:
    console.print(text, markup=False, soft_wrap=True)


def _debug() -> bool:
    return os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")


def _count(n: int, noun: str) -> str:
    """``1 image``, ``2 images``, ``1,000 images``."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _fail(message: str, code: int, kind: str = "error") -> NoReturn:
    if _debug():
        traceback.print_exc()
    _say(_stderr(), f"{kind}: " + " ".join(message.split()))
    raise typer.Exit(code)


@contextmanager
def _errors() -> Iterator[None]:
    """One line on stderr and the right exit code for every error a command can meet."""
    try:
        yield
    except typer.Exit:
        raise
    except TrainingInterrupted as exc:  # Ctrl-C asked for it: a stop, not a failure
        _fail(str(exc), exc.exit_code, "stopped")
    except AppError as exc:
        _fail(str(exc), exc.exit_code)
    except SciDevNNError as exc:  # model files, plugins, the data layer's DataError
        _fail(str(exc), EXIT_USER)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        _fail(f"{exc.strerror or exc}{where}", EXIT_USER)
    except KeyboardInterrupt:
        _fail("interrupted", EXIT_INTERRUPTED, "stopped")
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
            metavar="",  # a flag: no <bool> in the help
            help="Show the versions of mnist-cli, SciDevNN and torch, then exit.",
            callback=_version_callback,
            is_eager=True,
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            min=0,
            help="CPU threads for torch's operations (0: one per core, torch's own default). "
            r"[dim]\[default: $OMP_NUM_THREADS, else 1, which does not collapse when other "
            "programs share the cores; on an idle machine more can be up to 2x faster][/dim]",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Train, run, evaluate and inspect SciDevNN networks on MNIST-format digits.

    Start with [bold]mnist-cli train[/bold]: it trains a small network on the real MNIST
    digits shipped with the app and writes model.h5.
    """
    if threads is None and "OMP_NUM_THREADS" not in os.environ:
        threads = 1
    if threads:
        torch.set_num_threads(threads)


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
        typer.Option(
            "--download",
            metavar="",  # a flag: no <bool> in the help
            help="With --dataset mnist: fetch the four MNIST files first.",
        ),
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
            "--batch-size",
            "-b",
            help="Images per step. [dim]\\[default: 64][/dim]",
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
            "Ctrl-C), exactly as if training had not stopped: it keeps the checkpoint's "
            "settings, data and --plot; only --epochs, --lr, --data and --plot may be given "
            "anew. The metrics file follows the model file (--out).",
            show_default=False,
        ),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            help="Also draw loss and accuracy curves to this PNG, after every epoch (recorded "
            "in the checkpoint: --resume keeps drawing there unless given another --plot).",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(hidden=True, help="Use only N training (and N test) images."),
    ] = None,
    nproc: Annotated[
        int,
        typer.Option(
            min=1,
            help="Train data-parallel in N worker processes (torch.distributed, gloo on CPU): "
            "each batch is split across them, the run is otherwise the same.",
        ),
    ] = 1,
) -> None:
    """Train a network; write the model file, a metrics file and the final test accuracy.

    With no options: the mlp on the embedded sample of real MNIST digits, into model.h5.
    A checkpoint is saved after every epoch; Ctrl-C saves one and stops.
    """
    from mnist_cli.training import train_model
    from scidevnn.distributed import is_main_process, shutdown

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
            nproc=nproc,
        )
        main_process = is_main_process()
        shutdown()  # under torchrun: leave the process group train_model joined
        if not main_process:  # under torchrun: worker 0 alone reports
            return
        if result.test_accuracy is not None:
            _say(
                console,
                f"test accuracy {result.test_accuracy:.2%} (loss {result.test_loss:.4f}) on "
                f"{_count(result.test_images, 'test image')}",
            )
        written = [str(result.path), str(result.metrics_path)]
        if result.plot_path is not None:
            written.append(str(result.plot_path))
        _say(console, "saved " + ", ".join(written))


# --------------------------------------------------------------------- data sources
@dataclass(frozen=True)
class _Source:
    """What infer or evaluate reads.

    The images, their file names (image files only), the class names (None: digits), and the
    line to print saying which data it is when it came from the model file's record.
    """

    data: Dataset
    image_names: list[str] | None = None
    class_names: Sequence[str] | None = None
    note: str | None = None


def _named(dataset: DatasetChoice | None) -> DatasetName | None:
    return dataset.value if dataset else None


def _source(
    model: Path,
    stored: dict[str, Any],
    images: list[str] | None,
    data: Path | None,
    dataset: DatasetChoice | None,
) -> _Source:
    """The images to classify: files, stdin, --data/--dataset, else the model's training data."""
    named = data is not None or dataset is not None
    if images and named:
        raise AppError("give either image files (or -) or --data/--dataset, not both")
    recorded = recorded_data(stored)
    names = class_names(_named(dataset), recorded)
    if images:
        if "-" in images:
            if len(images) > 1:
                raise AppError("- (IDX on stdin) cannot be combined with image files")
            return _Source(_stdin_images(), class_names=names)
        for name in images:
            if not Path(name).exists():
                raise AppError(f"{name}: no such image file")
        return _Source(load_images(images), list(images), names)
    if named:
        return _Source(resolve(_named(dataset), data, False, "test"), class_names=names)
    if recorded is None:
        raise AppError(
            "nothing to classify: give image files, --data DIR (IDX files), --dataset, "
            f"or - to read IDX images from stdin ({model} records no training data to use)"
        )
    return _Source(
        load_recorded(model, recorded, require_labels=False),
        class_names=names,
        note=recorded_note(model, recorded),
    )


def _stdin_images() -> Dataset:
    if sys.stdin.isatty():
        raise AppError("- reads IDX images from stdin, but stdin is a terminal (pipe a file in)")
    payload = sys.stdin.buffer.read()
    tensor = load_idx_bytes(payload, "<stdin>")
    return Dataset(tensor, None, "<stdin>")


def _evaluation_source(
    model: Path, stored: dict[str, Any], data: Path | None, dataset: DatasetChoice | None
) -> _Source:
    """--data/--dataset, else the model's training data, else the embedded sample."""
    recorded = recorded_data(stored)
    names = class_names(_named(dataset), recorded)
    if data is not None or dataset is not None:
        return _Source(
            resolve(_named(dataset), data, False, "test", require_labels=True), class_names=names
        )
    if recorded is None:
        return _Source(
            resolve(None, None, False, "test", require_labels=True),
            note=f"no --data or --dataset given, and {model} records no training data: using "
            "the embedded MNIST sample",
        )
    return _Source(
        load_recorded(model, recorded, require_labels=True),
        class_names=names,
        note=recorded_note(model, recorded),
    )


def _class_label(c: int, names: Sequence[str] | None) -> str:
    """``3``, or ``3 Dress`` with class names."""
    return f"{c} {names[c]}" if names is not None else str(c)


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


def _prediction_table(predictions: Predictions, names: Sequence[str] | None) -> Table:
    labelled = predictions.labels is not None
    table = Table(title="Predictions")
    table.add_column("#", justify="right")
    table.add_column("image")
    table.add_column("class", justify="right")
    if names is not None:
        table.add_column("name")
    table.add_column("probability", justify="right")
    if labelled:
        table.add_column("label", justify="right")
        table.add_column("ok")
    classes = predictions.classes.tolist()
    confidence = predictions.confidence.tolist()
    for i, name in enumerate(predictions.names):
        row = [str(i), name, str(classes[i])]
        row += [names[classes[i]]] if names is not None else []
        row.append(f"{confidence[i]:.4f}")
        if predictions.labels is not None:
            label = int(predictions.labels[i])
            row += [_class_label(label, names), "yes" if label == classes[i] else "NO"]
        table.add_row(*row)
    return table


def _summary_table(predictions: Predictions, names: Sequence[str] | None) -> Table:
    table = Table(title=f"{_count(len(predictions), 'image')}: predicted classes")
    table.add_column("class", justify="right")
    if names is not None:
        table.add_column("name")
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
        row = [str(c)] + ([names[c]] if names is not None else []) + [f"{count:,}", mean]
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
        typer.Option(
            help="Classify the test images of a named dataset. [dim]\\[default, without image "
            "files or --data: the data the model was trained on][/dim]",
            show_default=False,
        ),
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
    """Classify digits: class and probability per image, accuracy when labels exist.

    Without image files, --data or --dataset: the test images of the data the model was
    trained on (as recorded in the model file).
    """
    console = _stdout()
    with _errors():
        if output is not None:
            check_output_path(output, "CSV file")
        if batch_size < 1:
            raise AppError("--batch-size must be at least 1")
        target = resolve_device(device)
        net, stored = read_model(model, device=target)
        source = _source(model, stored, images, data, dataset)
        if source.note is not None:
            _say(console, source.note)
        predictions = infer_model(
            net,
            source.data,
            names=source.image_names,
            device=target,
            batch_size=batch_size,
            normalization=normalization_of(stored),
        )
        if len(predictions) <= show:
            console.print(_prediction_table(predictions, source.class_names))
        else:
            console.print(_summary_table(predictions, source.class_names))
        _say(console, f"{_count(len(predictions), 'image')} from {source.data.name}")
        line = _accuracy_line(predictions)
        if line is not None:
            _say(console, line)
        if output is not None:
            write_text_atomic(output, _predictions_csv(predictions), "CSV file")
            _say(console, f"wrote {output}")
        elif len(predictions) > show:
            _say(console, "every prediction: --output FILE.csv")


# --------------------------------------------------------------------- evaluate
def _class_table(evaluation: Evaluation, names: Sequence[str] | None) -> Table:
    table = Table(title="Per class")
    table.add_column("class", justify="right")
    if names is not None:
        table.add_column("name")
    for name in ("precision", "recall", "f1", "support"):
        table.add_column(name, justify="right")
    for c, (p, r, f1, s) in enumerate(
        zip(evaluation.precision, evaluation.recall, evaluation.f1, evaluation.support, strict=True)
    ):
        row = [str(c)] + ([names[c]] if names is not None else [])
        table.add_row(*row, f"{p:.4f}", f"{r:.4f}", f"{f1:.4f}", f"{s:,}")
    return table


def _confusion_table(evaluation: Evaluation, names: Sequence[str] | None) -> Table:
    table = Table(title="Confusion matrix (rows: true class, columns: predicted)")
    table.add_column("", justify="right" if names is None else "left", style="bold")
    for c in range(NUM_CLASSES):
        table.add_column(str(c), justify="right")
    for i, row in enumerate(evaluation.confusion.tolist()):
        cells = [
            f"[bold green]{v}[/]" if i == j else (f"[red]{v}[/]" if v else "[dim]0[/]")
            for j, v in enumerate(row)
        ]
        table.add_row(escape(_class_label(i, names)), *cells)
    return table


@app.command()
def evaluate(
    model: Annotated[
        Path, typer.Argument(help="Model file written by mnist-cli train.", show_default=False)
    ],
    data: Annotated[
        Path | None,
        typer.Option(
            help="Folder of IDX files: score its labelled test images.", show_default=False
        ),
    ] = None,
    dataset: Annotated[
        DatasetChoice | None,
        typer.Option(
            help="Score the test images of a named dataset. [dim]\\[default, without --data: "
            "the data the model was trained on, else embedded][/dim]",
            show_default=False,
        ),
    ] = None,
    json_path: Annotated[
        Path | None,
        typer.Option("--json", help="Also write the scores as JSON here.", show_default=False),
    ] = None,
    png: Annotated[
        Path | None,
        typer.Option(help="Also draw the confusion matrix to this PNG.", show_default=False),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Images per batch.")] = 500,
    device: Annotated[str, typer.Option(help="cpu, or cuda when torch sees a GPU.")] = "cpu",
) -> None:
    """Score a model on labelled images: accuracy, per-class precision/recall, confusion matrix.

    Without --data or --dataset: the test images of the data the model was trained on (as
    recorded in the model file), the embedded sample for a file that records none.
    """
    from mnist_cli.plots import write_confusion_png

    console = _stdout()
    with _errors():
        for path, what in ((json_path, "JSON file"), (png, "picture")):
            if path is not None:
                check_output_path(path, what)
        if batch_size < 1:
            raise AppError("--batch-size must be at least 1")
        target = resolve_device(device)
        net, stored = read_model(model, device=target)
        source = _evaluation_source(model, stored, data, dataset)
        if source.note is not None:
            _say(console, source.note)
        predictions = infer_model(
            net,
            source.data,
            device=target,
            batch_size=batch_size,
            normalization=normalization_of(stored),
        )
        evaluation = evaluate_predictions(predictions)
        name = source.data.name
        _say(console, f"{model} on {_count(len(predictions), 'image')} of {name}")
        console.print(_class_table(evaluation, source.class_names))
        console.print(_confusion_table(evaluation, source.class_names))
        correct = int(evaluation.confusion.diagonal().sum())
        _say(
            console,
            f"accuracy {evaluation.accuracy:.2%} ({correct:,} of {len(predictions):,} correct), "
            f"loss {evaluation.loss:.4f}",
        )
        if json_path is not None:
            summary = {"model": str(model), "data": name, **evaluation.to_json(source.class_names)}
            write_text_atomic(json_path, json.dumps(summary, indent=2) + "\n", "JSON file")
            _say(console, f"wrote {json_path}")
        if png is not None:
            write_confusion_png(png, evaluation.confusion, f"{model.name} on {name}")
            _say(console, f"wrote {png}")


# --------------------------------------------------------------------- inspect
def _training_table(stored: dict[str, Any]) -> Table | None:
    config = stored.get("train_config")
    if not isinstance(config, dict):
        if not stored:
            return None
        table = Table(title="Metadata")
        table.add_column("key")
        table.add_column("value")
        for key, value in stored.items():
            table.add_row(key, json.dumps(value)[:80])
        return table
    table = Table(title="Training", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    data = config.get("data_dir") or config.get("dataset") or "embedded"
    table.add_row("model", str(config.get("model")))
    table.add_row(
        "data", str(data) + (f" (limit {config['limit']})" if config.get("limit") else "")
    )
    epochs, done, step = config.get("epochs"), stored.get("epoch", 0), stored.get("step", 0)
    if stored.get("finished"):
        status = f"finished: {done} of {epochs} epochs"
    elif step:
        status = f"stopped in epoch {done + 1} of {epochs} after batch {step}: resume with --resume"
    else:
        status = f"stopped after {done} of {epochs} epochs: resume with --resume"
    table.add_row("progress", status)
    table.add_row(
        "optimizer",
        f"{config.get('optimizer')} lr {config.get('lr')} x{config.get('lr_decay')}/epoch, "
        f"batch {config.get('batch_size')}",
    )
    table.add_row("seed", str(config.get("seed")))
    if config.get("val_split"):
        table.add_row("validation split", str(config.get("val_split")))
    if config.get("plot"):
        table.add_row("plot", str(config["plot"]))
    history = stored.get("history")
    if isinstance(history, list) and history:
        last = history[-1]
        line = f"loss {last.get('loss', float('nan')):.4f}, accuracy {last.get('accuracy', 0):.2%}"
        if last.get("val_accuracy") is not None:
            line += f", val_accuracy {last['val_accuracy']:.2%}"
        table.add_row(f"epoch {last.get('epoch')}", line)
    if stored.get("test_accuracy") is not None:
        table.add_row(
            "test",
            f"accuracy {stored['test_accuracy']:.2%}, loss {stored.get('test_loss') or 0:.4f}",
        )
    if stored.get("app_version"):
        table.add_row("written by", f"{stored.get('app', 'mnist-cli')} {stored['app_version']}")
    return table


@app.command()
def inspect(
    model: Annotated[Path, typer.Argument(help="Model file to describe.", show_default=False)],
) -> None:
    """Show a model file: layers, output shapes, parameters, plugin packages, training state."""
    from mnist_cli.inspection import inspect_model_file

    console = _stdout()
    with _errors():
        report = inspect_model_file(model)
        _say(
            console,
            f"{model}: SciDevNN model file, format version {report.format_version}, "
            f"written by scidevnn {report.framework_version}",
        )
        table = Table(title="Layers")
        # A Sequential's layers are named 0, 1, ...: a "#" column would repeat the names.
        numbered = any(row.name != str(i) for i, row in enumerate(report.layers))
        columns = [("#", "right")] if numbered else []
        columns += [
            ("name", "right" if not numbered else "left"),
            ("type", "left"),
            ("output shape", "left"),
            ("parameters", "right"),
            ("package", "left"),
        ]
        for name, justify in columns:
            table.add_column(name, justify=justify)  # type: ignore[arg-type]
        for i, row in enumerate(report.layers):
            package = f"{row.package} {row.version}"
            if row.installed_version is None:
                package += " (not installed)"
            elif row.installed_version != row.version:
                package += f" (installed {row.installed_version})"
            cells = [str(i)] if numbered else []
            cells += [row.name, row.type, row.output_shape, f"{row.parameters:,}", package]
            table.add_row(*cells)
        console.print(table)
        _say(console, f"input (1, 1, 28, 28); {report.parameters:,} parameters in all")
        training = _training_table(report.metadata)
        if training is not None:
            console.print(training)
        if report.optimizer_type is not None:
            _say(console, f"optimizer state: {report.optimizer_type} (training can resume)")


# --------------------------------------------------------------------- layers
@app.command()
def layers() -> None:
    """List every layer the installed plugins provide, with its package and version."""
    from scidevnn.plugins import list_layers

    console = _stdout()
    with _errors():
        table = Table(title="Layers")
        for name in ("layer", "package", "version", "class"):
            table.add_column(name)
        infos = list_layers()
        for info in infos:
            table.add_row(
                info.name,
                info.distribution,
                info.version,
                f"{info.cls.__module__}.{info.cls.__qualname__}",
            )
        console.print(table)
        packages = sorted({info.distribution for info in infos})
        _say(
            console,
            f"{_count(len(infos), 'layer')} from {_count(len(packages), 'package')}: "
            + ", ".join(packages),
        )


# --------------------------------------------------------------------- time
@app.command("time")
def time_command(
    model: Annotated[ModelChoice, typer.Option("--model", "-m", help="Network to time.")] = (
        ModelChoice.cnn
    ),
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Images per step.")] = 64,
    iterations: Annotated[int, typer.Option(help="Timed training steps.")] = 20,
    warmup: Annotated[int, typer.Option(help="Untimed steps first.")] = 3,
    optimizer: Annotated[
        OptimizerChoice, typer.Option(help="Optimizer of the step.")
    ] = OptimizerChoice.adam,
    device: Annotated[str, typer.Option(help="cpu, or cuda when torch sees a GPU.")] = "cpu",
    seed: Annotated[int, typer.Option(help="Seed of the random initial weights.")] = 0,
) -> None:
    """Per-layer forward and backward milliseconds of a training step, like Caffe's time."""
    from mnist_cli.timing import time_model

    console = _stdout()
    with _errors():
        if batch_size < 1 or iterations < 1 or warmup < 0:
            raise AppError("--batch-size and --iterations must be at least 1, --warmup 0 or more")
        target = resolve_device(device)
        torch.manual_seed(seed)
        net = build_model(model.value)
        report = time_model(
            net,
            batch_size=batch_size,
            iterations=iterations,
            warmup=warmup,
            optimizer=optimizer.value,
            device=target,
        )
        title = (
            f"{model.value} ({MODELS[model.value].description}): batch {batch_size}, "
            f"mean of {iterations} steps on {target}"
        )
        table = Table(title=title, show_footer=True)
        total = report.forward_ms + report.backward_ms
        columns: list[tuple[str, str, Any]] = [
            ("layer", "total", "left"),
            ("type", "", "left"),
            ("output", "", "left"),
            ("forward ms", f"{report.forward_ms:.3f}", "right"),
            ("backward ms", f"{report.backward_ms:.3f}", "right"),
            ("total ms", f"{total:.3f}", "right"),
            ("share", "100.0%", "right"),
        ]
        for header, footer, justify in columns:
            table.add_column(header, footer=footer, justify=justify)
        for row in report.rows:
            share = row.total_ms / total if total else 0.0
            table.add_row(
                row.name,
                row.type,
                row.output_shape,
                f"{row.forward_ms:.3f}",
                f"{row.backward_ms:.3f}",
                f"{row.total_ms:.3f}",
                f"{share:.1%}",
            )
        console.print(table)
        overhead = report.iteration_ms - report.timed_ms
        _say(console, f"optimizer step ({optimizer.value}): {report.optimizer_ms:.3f} ms")
        _say(
            console,
            f"one step end to end: {report.iteration_ms:.3f} ms = forward {report.forward_ms:.3f}"
            f" + backward {report.backward_ms:.3f} + optimizer {report.optimizer_ms:.3f}"
            f" + {overhead:.3f} between the timers; "
            f"{batch_size * 1000 / max(report.iteration_ms, 1e-9):,.0f} images/s",
        )
