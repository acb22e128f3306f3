"""The real ``mnist-cli`` command in a subprocess: train, infer, evaluate, inspect, layers, time.

Expected values come from the Python API on the same inputs (``infer_model``), from the files
the command wrote, or from the installed packages' metadata; never from an earlier run's output.
"""

from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
import time
from importlib import metadata
from pathlib import Path

import pytest
import torch
from cli_support import (
    Result,
    assert_same_arrays,
    cli,
    cli_env,
    cli_many,
    command,
    write_digit_pngs,
    write_idx_folder,
)
from PIL import Image

from mnist_cli import infer_model, train_model
from mnist_cli.checkpoint import read_checkpoint
from mnist_cli.data import load_idx_folder, load_images
from mnist_cli.data.idx import encode_idx

ANSI = "\x1b["


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained mlp (m.h5), an IDX folder of 60 labelled digits, three PNG digits."""
    folder = tmp_path_factory.mktemp("cli")
    train_model("mlp", epochs=2, limit=1000, out=folder / "m.h5")
    write_idx_folder(folder / "idx", count=60)
    write_digit_pngs(folder / "png")
    return folder


# --------------------------------------------------------------------- basics
def test_version_and_help(work: Path) -> None:
    version, bare = cli_many([(["--version"], work, None, None), ([], work, None, None)])
    assert version.returncode == 0
    assert f"mnist-cli {metadata.version('mnist-cli')}" in version.stdout
    assert f"scidevnn-core {metadata.version('scidevnn-core')}" in version.stdout
    assert f"torch {torch.__version__}" in version.stdout
    # no arguments: the help (click's convention: exit code 2, as for a usage error)
    assert bare.returncode == 2
    for name in ("train", "infer", "evaluate", "inspect", "layers", "time"):
        assert name in bare.stdout


# --------------------------------------------------------------------- train
@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Result]]:
    """One short training run per model, run side by side."""
    runs = {}
    for name in ("mlp", "cnn", "lstm"):
        folder = tmp_path_factory.mktemp(f"train-{name}")
        runs[name] = folder
    args = {
        name: ["train", "--model", name, "--epochs", "1", "--limit", "128", "--plot", "c.png"]
        for name in runs
    }
    args["mlp"] = ["train", "--epochs", "1", "--limit", "128", "--plot", "c.png"]  # default model
    results = cli_many([(args[name], folder, None, None) for name, folder in runs.items()])
    return {name: (runs[name], result) for name, result in zip(runs, results, strict=True)}


@pytest.mark.parametrize("name", ["mlp", "cnn", "lstm"])
def test_train_smoke_writes_model_metrics_and_plot(
    smoke: dict[str, tuple[Path, Result]], name: str
) -> None:
    folder, result = smoke[name]
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert ANSI not in result.stdout  # not a terminal: plain lines, no progress bar
    assert f"Training {name} (" in result.stdout
    assert re.search(r"^epoch 1/1  loss \d+\.\d+  accuracy \d+\.\d+%", result.stdout, re.M)
    match = re.search(
        r"test accuracy (\d+\.\d+)% \(loss [\d.]+\) on 128 test images", result.stdout
    )
    assert match, result.stdout
    checkpoint = read_checkpoint(folder / "model.h5")
    assert checkpoint.config.model == name
    assert checkpoint.state.test_accuracy == pytest.approx(float(match.group(1)) / 100, abs=6e-5)
    rows = [json.loads(line) for line in (folder / "model.metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1]
    with Image.open(folder / "c.png") as image:
        assert image.format == "PNG"


def test_ctrl_c_saves_a_checkpoint_and_resume_continues_exactly(tmp_path: Path) -> None:
    args = ["train", "--epochs", "40", "--limit", "256", "--batch-size", "16", "--out", "m.h5"]
    process = subprocess.Popen(
        command(*args),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(tmp_path, {"PYTHONUNBUFFERED": "1"}),
    )
    assert process.stdout is not None
    for line in process.stdout:  # wait for the first finished epoch
        if line.startswith(b"epoch 1/40"):
            break
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    message = stderr.decode().strip()
    assert message.startswith("stopped: interrupted")  # asked for: not an error
    assert "mnist-cli train --resume m.h5" in message
    assert "Traceback" not in message and len(message.splitlines()) == 1
    stopped = read_checkpoint(tmp_path / "m.h5")
    done = stopped.state.epoch + 1  # finish the epoch in which Ctrl-C came
    resumed = cli("train", "--resume", "m.h5", "--epochs", done, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    # the resume header names the position the Ctrl-C message named
    middle = re.search(r"interrupted at epoch (\d+), batch (\d+/\d+)", message)
    where = (
        f"resuming epoch {middle[1]} after batch {middle[2]}"
        if middle
        else f"resuming after epoch {stopped.state.epoch}"
    )
    assert resumed.stdout.splitlines()[0].endswith(where), resumed.stdout
    assert f"epoch {done}/{done}" in resumed.stdout
    train_model("mlp", epochs=done, limit=256, batch_size=16, out=tmp_path / "straight.h5")
    assert_same_arrays(tmp_path / "straight.h5", tmp_path / "m.h5")


# --------------------------------------------------------------------- infer
def test_infer_image_files_prints_a_table(work: Path) -> None:
    pngs = sorted((work / "png").glob("*.png"))
    result = cli("infer", "m.h5", *pngs, cwd=work)
    assert result.returncode == 0, result.stderr
    expected = infer_model(work / "m.h5", load_images(pngs))
    for i, path in enumerate(pngs):
        row = re.search(rf"{re.escape(str(path))}\s*│\s*(\d)\s*│\s*([\d.]+)", result.stdout)
        assert row, result.stdout
        assert int(row.group(1)) == int(expected.classes[i])
        assert float(row.group(2)) == pytest.approx(float(expected.confidence[i]), abs=1e-4)
    assert "3 images from 3 image files" in result.stdout
    assert "accuracy" not in result.stdout  # no labels for image files


def test_infer_idx_folder_summary_accuracy_and_csv(work: Path) -> None:
    result = cli("infer", "m.h5", "--data", "idx", "--output", "p.csv", "--show", "10", cwd=work)
    assert result.returncode == 0, result.stderr
    data = load_idx_folder(work / "idx", "test")
    assert data.labels is not None
    expected = infer_model(work / "m.h5", data)
    assert expected.accuracy is not None
    correct = int((expected.classes == data.labels).sum())
    assert f"accuracy {expected.accuracy:.2%} ({correct:,} of 60 correct)" in result.stdout
    assert "60 images: predicted classes" in result.stdout  # a summary above --show
    with open(work / "p.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 60
    assert [int(row["class"]) for row in rows] == expected.classes.tolist()
    assert [int(row["label"]) for row in rows] == data.labels.tolist()
    probabilities = [float(row[f"p{c}"]) for row in rows[:1] for c in range(10)]
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)


def test_infer_reads_idx_from_stdin(work: Path) -> None:
    data = load_idx_folder(work / "idx", "test")
    for compress in (False, True):
        payload = encode_idx(data.images[:7], compress=compress)
        result = cli("infer", "m.h5", "-", cwd=work, stdin=payload)
        assert result.returncode == 0, result.stderr
        assert "7 images from <stdin>" in result.stdout
        expected = infer_model(work / "m.h5", data.images[:7]).classes.tolist()
        shown = [
            int(m) for m in re.findall(r"^│\s*\d+\s*│\s*\d+\s*│\s*(\d)\s*│", result.stdout, re.M)
        ]
        assert shown == expected


# --------------------------------------------------------------------- evaluate
def test_evaluate_prints_tables_and_writes_json_and_png(work: Path) -> None:
    result = cli(
        "evaluate", "m.h5", "--data", "idx", "--json", "e.json", "--png", "e.png", cwd=work
    )
    assert result.returncode == 0, result.stderr
    assert "Per class" in result.stdout and "Confusion matrix" in result.stdout
    data = load_idx_folder(work / "idx", "test")
    assert data.labels is not None
    predictions = infer_model(work / "m.h5", data)
    assert f"accuracy {predictions.accuracy:.2%}" in result.stdout
    summary = json.loads((work / "e.json").read_text())
    assert summary["images"] == 60
    assert summary["accuracy"] == pytest.approx(predictions.accuracy)
    confusion = torch.tensor(summary["confusion_matrix"])
    assert confusion.sum() == 60
    assert confusion.sum(1).tolist() == torch.bincount(data.labels, minlength=10).tolist()
    assert confusion.sum(0).tolist() == torch.bincount(predictions.classes, minlength=10).tolist()
    for entry in summary["per_class"]:
        c = entry["class"]
        if confusion[c].sum():
            assert entry["recall"] == pytest.approx(float(confusion[c, c] / confusion[c].sum()))
    with Image.open(work / "e.png") as image:
        assert image.format == "PNG"


# --------------------------------------------------------------------- inspect, layers
def test_inspect_shows_layers_shapes_parameters_packages_and_training(work: Path) -> None:
    result = cli("inspect", "m.h5", cwd=work)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    types = re.findall(r"^│\s*\d+\s*│\s*(\w+)", out, re.M)
    assert types == ["Flatten", "Linear", "ReLU", "Linear"]
    for shape in ("(1, 784)", "(1, 256)", "(1, 10)"):
        assert shape in out
    assert f"{784 * 256 + 256:,}" in out and f"{256 * 10 + 10:,}" in out
    assert f"{784 * 256 + 256 + 2570:,} parameters in all" in out
    assert f"scidevnn-core {metadata.version('scidevnn-core')}" in out
    assert f"scidevnn-cnn {metadata.version('scidevnn-cnn')}" in out  # ReLU's plugin
    assert "finished: 2 of 2 epochs" in out
    assert "optimizer state: Adam" in out


def test_layers_lists_every_plugin_layer_with_package_and_version(work: Path) -> None:
    result = cli("layers", cwd=work)
    assert result.returncode == 0, result.stderr
    for layer, package in [
        ("Linear", "scidevnn-core"),
        ("Sequential", "scidevnn-core"),
        ("Conv2d", "scidevnn-cnn"),
        ("BatchNorm2d", "scidevnn-cnn"),
        ("LSTMCell", "scidevnn-rnn"),
    ]:
        pattern = rf"│ {layer}\s*│ {package}\s*│ {re.escape(metadata.version(package))}\s*│"
        assert re.search(pattern, result.stdout), (layer, result.stdout)


# --------------------------------------------------------------------- time
def test_time_reports_per_layer_milliseconds_whose_totals_add_up(work: Path) -> None:
    result = cli(
        "time",
        "--model",
        "cnn",
        "--iterations",
        "2",
        "--warmup",
        "1",
        "--batch-size",
        "8",
        cwd=work,
    )
    assert result.returncode == 0, result.stderr
    number = r"\s*([\d.]+) │"
    rows = re.findall(rf"^│ (\S+)\s*│ (\w+)\s*│ [^│]*│{number * 3}", result.stdout, re.M)
    names = [row[1] for row in rows]
    assert names[:4] == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"]
    assert names[-1] == "CrossEntropyLoss" and len(names) == 15
    body = [[float(v) for v in row[2:]] for row in rows]
    footer = re.search(rf"^│ total\s*│\s*│\s*│{number * 3}", result.stdout, re.M)
    assert footer, result.stdout
    total = [float(v) for v in footer.groups()]
    for column in range(3):
        assert total[column] == pytest.approx(sum(r[column] for r in body), abs=0.001 * len(body))
    for forward, backward, both in body:
        assert both == pytest.approx(forward + backward, abs=0.0015)
    assert re.search(r"one step end to end: [\d.]+ ms = forward", result.stdout)


def test_train_without_out_writes_model_h5_in_the_working_folder(tmp_path: Path) -> None:
    started = time.time()
    result = cli("train", "--epochs", "1", "--limit", "64", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "model.h5",
        "model.metrics.jsonl",
    ]
    assert (tmp_path / "model.h5").stat().st_mtime >= started - 1
    assert "saved model.h5, model.metrics.jsonl" in result.stdout
