"""What a new user meets: resumed runs keep their plot, infer/evaluate read the data the model
was trained on, Ctrl-C reads as a stop, class names for Fashion-MNIST, plain-English counts.

Commands run in-process through typer's CliRunner on tiny data; expected values come from the
Python API (``infer_model``, ``read_checkpoint``) or from the files the commands wrote.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_support import write_digit_pngs, write_idx_folder
from PIL import Image
from typer.testing import CliRunner, Result

import mnist_cli.cli
from mnist_cli import AppError, infer_model, load_model, save_model, train_model
from mnist_cli.checkpoint import read_checkpoint
from mnist_cli.cli import app
from mnist_cli.data import datasets as datasets_module
from mnist_cli.data import load_embedded, load_idx_folder
from mnist_cli.reporting import EpochStats

TINY: dict[str, Any] = {"limit": 96, "batch_size": 32}
#: Fashion-MNIST's classes as its publishers list them, by label.
FASHION = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


def flat(text: str) -> str:
    """Help or table text with the box lines and line breaks squeezed out."""
    return " ".join(re.sub(r"[│╭╮╰╯─┃┏┓┗┛━]", " ", text).split())


def run(*args: object) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Models trained on a stand-in Fashion-MNIST folder, on an IDX folder, on the embedded
    sample, and one file with no training record; a PNG digit."""
    root = tmp_path_factory.mktemp("usage")
    fashion = root / "fashion-mnist"
    write_idx_folder(fashion, count=200, split="train")
    write_idx_folder(fashion, count=40, split="test")
    shutil.copytree(fashion, root / "digits")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(datasets_module, "FASHION_DIRS", (fashion,))
        train_model("mlp", dataset="fashion", epochs=1, out=root / "fashion.h5", **TINY)
    train_model("mlp", data=root / "digits", epochs=1, out=root / "folder.h5", **TINY)
    train_model("mlp", epochs=1, out=root / "embedded.h5", **TINY)
    save_model(load_model(root / "embedded.h5"), root / "plain.h5")
    write_digit_pngs(root / "png", count=1)
    return root


@pytest.fixture
def here(work: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in ``work`` with the stand-in Fashion-MNIST where ``--dataset fashion`` looks."""
    monkeypatch.chdir(work)
    monkeypatch.setattr(datasets_module, "FASHION_DIRS", (work / "fashion-mnist",))
    return work


# --------------------------------------------------------------------- 1. --resume and --plot
def test_resume_keeps_drawing_the_recorded_plot_unless_given_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    train_model("mlp", epochs=1, out="r.h5", plot="c.png", **TINY)
    plot = tmp_path / "c.png"
    assert read_checkpoint(tmp_path / "r.h5").config.plot == str(plot)  # absolute
    plot.unlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the recorded path does not depend on the folder
    result = train_model(epochs=2, resume=tmp_path / "r.h5")
    assert result.plot_path == plot
    with Image.open(plot) as image:
        assert image.format == "PNG"
    assert not list(elsewhere.iterdir())
    plot.unlink()
    result = train_model(epochs=3, resume=tmp_path / "r.h5", plot=tmp_path / "d.png")
    assert (tmp_path / "d.png").is_file() and not plot.exists()
    assert read_checkpoint(tmp_path / "r.h5").config.plot == str(tmp_path / "d.png")
    assert [row["epoch"] for row in result.history] == [1, 2, 3]


def test_resume_says_when_the_recorded_plot_cannot_be_written(tmp_path: Path) -> None:
    (tmp_path / "pics").mkdir()
    train_model("mlp", epochs=1, out=tmp_path / "r.h5", plot=tmp_path / "pics" / "c.png", **TINY)
    shutil.rmtree(tmp_path / "pics")
    with pytest.raises(AppError, match=r"pics.*does not exist.*recorded in .*r.h5.*--plot"):
        train_model(epochs=2, resume=tmp_path / "r.h5")
    train_model(epochs=2, resume=tmp_path / "r.h5", plot=tmp_path / "new.png")
    assert (tmp_path / "new.png").is_file()


def test_help_of_resume_and_plot_says_the_plot_is_kept() -> None:
    text = flat(run("train", "--help").stdout)
    assert "it keeps the checkpoint's settings, data and --plot" in text
    assert "--resume keeps drawing there unless given another --plot" in text


# --------------------------------------------------------------------- 2. recorded data
def test_evaluate_without_data_scores_the_recorded_named_dataset(here: Path) -> None:
    result = run("evaluate", "fashion.h5", "--json", "f.json")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "no --data or --dataset given: using Fashion-MNIST (--dataset fashion), the data "
        "fashion.h5 was trained on"
    )
    data = load_idx_folder(here / "fashion-mnist", "test")
    expected = infer_model(here / "fashion.h5", data)
    assert f"fashion.h5 on 40 images of {here / 'fashion-mnist'}" in result.stdout
    assert f"accuracy {expected.accuracy:.2%}" in result.stdout
    summary = json.loads((here / "f.json").read_text())
    assert summary["images"] == 40
    assert summary["accuracy"] == pytest.approx(expected.accuracy)


def test_evaluate_and_infer_without_data_use_the_recorded_folder_or_say_it_is_gone(
    here: Path,
) -> None:
    evaluated = run("evaluate", "folder.h5")
    assert evaluated.exit_code == 0, evaluated.output
    folder = here / "digits"
    assert evaluated.stdout.startswith(f"no --data or --dataset given: using the folder {folder}")
    assert "on 40 images of" in evaluated.stdout
    inferred = run("infer", "folder.h5", "--show", "0")
    assert inferred.exit_code == 0, inferred.output
    expected = infer_model(here / "folder.h5", load_idx_folder(folder, "test"))
    assert f"accuracy {expected.accuracy:.2%}" in inferred.stdout
    folder.rename(here / "moved")
    try:
        for command in ("evaluate", "infer"):
            result = run(command, "folder.h5")
            assert result.exit_code == 2
            assert result.stderr.strip() == (
                f"error: folder.h5 was trained on the folder {folder}, which no longer exists: "
                "give the test data with --data DIR (or --dataset)"
            )
        given = run("evaluate", "folder.h5", "--data", "moved")
        assert given.exit_code == 0 and "on 40 images of moved" in given.stdout
    finally:
        (here / "moved").rename(folder)


def test_evaluate_a_file_without_training_record_says_it_uses_the_embedded_sample(
    here: Path,
) -> None:
    result = run("evaluate", "plain.h5")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == (
        "no --data or --dataset given, and plain.h5 records no training data: using the "
        "embedded MNIST sample"
    )
    assert f"on {len(load_embedded('test')):,} images of embedded" in result.stdout


def test_help_of_evaluate_and_infer_names_the_default_data() -> None:
    evaluate = flat(run("evaluate", "--help").stdout)
    assert "[default, without --data: the data the model was trained on, else embedded]" in (
        evaluate
    )
    infer = flat(run("infer", "--help").stdout)
    assert "the data the model was trained on" in infer


# --------------------------------------------------------------------- 3. Ctrl-C
class CtrlCAt:
    """A reporter that presses Ctrl-C (SIGINT to this process) after batch ``batch``."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.target, self.epoch = (epoch, batch), 0

    def start_epoch(self, epoch: int, epochs: int, batches: int, done: int) -> None:
        self.epoch = epoch

    def update(self, done: int, loss: float, accuracy: float, images_per_second: float) -> None:
        if (self.epoch, done) == self.target:
            os.kill(os.getpid(), signal.SIGINT)

    def end_epoch(self, stats: EpochStats) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def test_ctrl_c_prints_stopped_and_the_resume_header_names_the_same_position(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["train", "--epochs", "3", "--limit", "96", "--batch-size", "32", "--out", "m.h5"]
    with monkeypatch.context() as patch:
        patch.setattr(mnist_cli.cli, "make_reporter", lambda console: CtrlCAt(2, 1))
        stopped = run(*args)
    assert stopped.exit_code == 130
    assert stopped.stderr.strip() == (
        "stopped: interrupted at epoch 2, batch 1/3: the checkpoint is in m.h5; continue "
        "with: mnist-cli train --resume m.h5"
    )
    resumed = run("train", "--resume", "m.h5")
    assert resumed.exit_code == 0, resumed.output
    header = resumed.stdout.splitlines()[0]
    assert header.startswith("Resuming mlp")
    assert header.endswith("; resuming epoch 2 after batch 1/3")
    assert read_checkpoint(tmp_path / "m.h5").state.finished


def test_resume_header_after_a_whole_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["train", "--epochs", "3", "--limit", "96", "--batch-size", "32", "--out", "m.h5"]
    with monkeypatch.context() as patch:
        patch.setattr(mnist_cli.cli, "make_reporter", lambda console: CtrlCAt(1, 3))
        stopped = run(*args)
    assert stopped.exit_code == 130
    assert stopped.stderr.startswith("stopped: interrupted after epoch 1:")
    resumed = run("train", "--resume", "m.h5")
    assert resumed.stdout.splitlines()[0].endswith("; resuming after epoch 1")


# --------------------------------------------------------------------- 4. f1 and class names
def test_evaluate_json_has_f1_and_fashion_class_names(here: Path) -> None:
    result = run("evaluate", "fashion.h5", "--json", "f.json")
    assert result.exit_code == 0, result.output
    summary = json.loads((here / "f.json").read_text())
    confusion = torch.tensor(summary["confusion_matrix"], dtype=torch.float64)
    assert [entry["name"] for entry in summary["per_class"]] == FASHION
    for c, entry in enumerate(summary["per_class"]):
        predicted, actual, hits = confusion[:, c].sum(), confusion[c].sum(), confusion[c, c]
        p = float(hits / predicted) if predicted else 0.0
        r = float(hits / actual) if actual else 0.0
        assert entry["f1"] == pytest.approx(2 * p * r / (p + r) if p + r else 0.0)
    text = flat(result.stdout)
    for c, name in enumerate(FASHION):
        entry = summary["per_class"][c]
        assert f"{c} {name} {entry['precision']:.4f} {entry['recall']:.4f} {entry['f1']:.4f}" in (
            text
        )
        assert f"{c} {name} " in text.split("Confusion matrix")[1]


def test_infer_shows_fashion_names_and_digits_stay_digits(here: Path) -> None:
    fashion = run("infer", "fashion.h5", "--show", "100")
    assert fashion.exit_code == 0, fashion.output
    expected = infer_model(here / "fashion.h5", load_idx_folder(here / "fashion-mnist", "test"))
    rows = re.findall(r"^│\s*\d+\s*│\s*\d+\s*│\s*(\d)\s*│ ([^│]*?)\s*│", fashion.stdout, re.M)
    assert [(int(c), name) for c, name in rows] == [
        (c, FASHION[c]) for c in expected.classes.tolist()
    ]
    named = run("evaluate", "embedded.h5", "--dataset", "fashion")  # the data decides too
    assert "Ankle boot" in named.stdout
    digits = run("evaluate", "embedded.h5", "--data", "digits", "--json", "d.json")
    assert digits.exit_code == 0, digits.output
    assert not any(name in digits.stdout for name in FASHION)
    assert re.search(r"┃ class ┃ precision ┃", digits.stdout)
    summary = json.loads((here / "d.json").read_text())
    assert [entry["name"] for entry in summary["per_class"]] == [str(c) for c in range(10)]


# --------------------------------------------------------------------- 5. counts, inspect
def test_one_image_is_singular(here: Path) -> None:
    result = run("infer", "embedded.h5", "png/digit0.png")
    assert result.exit_code == 0, result.output
    assert "1 image from png/digit0.png" in result.stdout
    assert "1 images" not in result.stdout


def test_inspect_has_no_index_column_repeating_the_names(here: Path) -> None:
    result = run("inspect", "embedded.h5")
    assert result.exit_code == 0, result.output
    assert re.search(r"┃ name ┃ type\s*┃ output shape", result.stdout)
    assert "┃ #" not in result.stdout
    names = re.findall(r"^│\s*(\d+) │ (\w+)", result.stdout, re.M)
    assert names == [("0", "Flatten"), ("1", "Linear"), ("2", "ReLU"), ("3", "Linear")]


# --------------------------------------------------------------------- 6. help metavars
def test_flags_show_no_bool_metavar() -> None:
    main, train = run("--help").stdout, run("train", "--help").stdout
    assert re.search(r"--version\s+Show the versions", main), main
    assert re.search(r"--download\s+With --dataset mnist", train), train


def test_threads_option_sets_torchs_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        result = CliRunner().invoke(app, ["--threads", "3", "layers"])
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == 3
        result = CliRunner().invoke(app, ["layers"])  # no option, no OMP_NUM_THREADS: one
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
