"""The training loop through its Python API: determinism, exact resume, checkpoints, metrics.

Every run uses a few hundred embedded digits so the file stays fast on two busy cores.
"""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_support import assert_same_arrays, model_arrays, snapshot
from PIL import Image

from mnist_cli import (
    AppError,
    TrainingDivergedError,
    TrainingInterrupted,
    load_model,
    save_model,
    train_model,
)
from mnist_cli.checkpoint import read_checkpoint
from mnist_cli.models import MODELS, build_model
from mnist_cli.reporting import EpochStats
from mnist_cli.training import metrics_path_for
from scidevnn import no_grad

TINY: dict[str, Any] = {"limit": 96, "batch_size": 32}


def without_timing(history: list[dict[str, object]]) -> list[dict[str, object]]:
    return [
        {k: v for k, v in row.items() if k not in ("seconds", "images_per_second")}
        for row in history
    ]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_maps_digits_to_ten_logits(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name)
    with no_grad():
        out = model(torch.randn(3, 1, 28, 28))
    assert out.shape == (3, 10)
    assert torch.isfinite(out).all()


def test_same_seed_gives_bit_identical_weights_other_seed_does_not(tmp_path: Path) -> None:
    a = train_model("mlp", epochs=1, seed=3, out=tmp_path / "a.h5", **TINY)
    b = train_model("mlp", epochs=1, seed=3, out=tmp_path / "b.h5", **TINY)
    c = train_model("mlp", epochs=1, seed=4, out=tmp_path / "c.h5", **TINY)
    assert_same_arrays(a.path, b.path)
    assert a.history[0]["loss"] == b.history[0]["loss"]
    first = "model/1/weight"
    assert model_arrays(a.path)[first].tobytes() != model_arrays(c.path)[first].tobytes()


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_two_epochs_then_resume_two_more_equals_four_straight(tmp_path: Path, name: str) -> None:
    straight = train_model(name, epochs=4, out=tmp_path / "straight.h5", **TINY)
    train_model(name, epochs=2, out=tmp_path / "resumed.h5", **TINY)
    resumed = train_model(epochs=4, resume=tmp_path / "resumed.h5")
    assert resumed.epochs_run == 2
    assert resumed.path == tmp_path / "resumed.h5"
    assert_same_arrays(straight.path, resumed.path)
    assert without_timing(straight.history) == without_timing(resumed.history)
    assert straight.test_accuracy == resumed.test_accuracy
    lines = metrics_path_for(resumed.path).read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]


class InterruptAt:
    """A reporter that presses Ctrl-C (SIGINT to this process) after batch ``batch``."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.target = (epoch, batch)
        self.epoch = 0

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


def test_ctrl_c_mid_epoch_saves_a_checkpoint_that_resumes_exactly(tmp_path: Path) -> None:
    handler = signal.getsignal(signal.SIGINT)
    straight = train_model("mlp", epochs=3, out=tmp_path / "straight.h5", **TINY)
    out = tmp_path / "stopped.h5"
    with pytest.raises(TrainingInterrupted, match=r"epoch 2, batch 1/3.*--resume"):
        train_model("mlp", epochs=3, out=out, reporter=InterruptAt(2, 1), **TINY)
    checkpoint = read_checkpoint(out)
    assert (checkpoint.state.epoch, checkpoint.state.step) == (1, 1)
    assert not checkpoint.state.finished
    resumed = train_model(resume=out)
    assert resumed.epochs_run == 2
    assert_same_arrays(straight.path, out)
    assert without_timing(straight.history) == without_timing(resumed.history)
    # Ctrl-C is back to its usual meaning once training is over
    assert signal.getsignal(signal.SIGINT) is handler


def test_ctrl_c_at_the_end_of_an_epoch_stops_after_its_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "m.h5"
    with pytest.raises(TrainingInterrupted, match="after epoch 1"):
        train_model("mlp", epochs=3, out=out, reporter=InterruptAt(1, 3), **TINY)
    checkpoint = read_checkpoint(out)
    assert (checkpoint.state.epoch, checkpoint.state.step) == (1, 0)


def test_checkpoint_holds_optimizer_state_config_history_and_rng(tmp_path: Path) -> None:
    result = train_model("mlp", epochs=2, seed=5, lr=0.003, out=tmp_path / "m.h5", **TINY)
    checkpoint = read_checkpoint(result.path)
    assert checkpoint.optimizer_type == "Adam"
    assert len(checkpoint.optimizer_state["state"]) == 4  # two Linear layers, weight and bias
    config = checkpoint.config
    assert (config.model, config.seed, config.lr, config.epochs, config.limit) == (
        "mlp",
        5,
        0.003,
        2,
        96,
    )
    assert checkpoint.state.epoch == 2 and checkpoint.state.finished
    assert [row["epoch"] for row in checkpoint.state.history] == [1, 2]
    assert checkpoint.state.history[1]["lr"] == pytest.approx(0.003 * 0.8)
    assert checkpoint.rng_state is not None
    assert checkpoint.rng_state.dtype == torch.uint8
    assert checkpoint.state.test_accuracy == result.test_accuracy


def test_metrics_file_has_one_json_line_per_epoch_and_plot_is_a_png(tmp_path: Path) -> None:
    result = train_model(
        "mlp", epochs=2, val_split=0.25, out=tmp_path / "run.h5", plot=tmp_path / "c.png", **TINY
    )
    assert result.metrics_path == tmp_path / "run.metrics.jsonl"
    rows = [json.loads(line) for line in result.metrics_path.read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]
    for row in rows:
        assert {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"} <= row.keys()
        assert 0.0 <= row["val_accuracy"] <= 1.0 and math.isfinite(row["val_loss"])
    assert rows[1]["loss"] < rows[0]["loss"]
    with Image.open(tmp_path / "c.png") as image:
        assert image.format == "PNG" and image.size == (1000, 420)
        # curves were drawn: more than the white background and black ink
        assert len(image.getcolors(100_000) or []) > 10


def test_validation_split_keeps_held_out_images_out_of_training(tmp_path: Path) -> None:
    result = train_model("mlp", epochs=1, val_split=0.25, out=tmp_path / "m.h5", **TINY)
    assert result.history[0]["val_loss"] is not None
    plain = train_model("mlp", epochs=1, out=tmp_path / "p.h5", **TINY)
    assert plain.history[0]["val_loss"] is None


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_file(
    tmp_path: Path,
) -> None:
    out = tmp_path / "m.h5"
    train_model("mlp", epochs=1, out=out, **TINY)
    before = snapshot(tmp_path)
    with pytest.raises(TrainingDivergedError) as info:
        train_model(epochs=3, lr=1e38, resume=out)
    message = str(info.value)
    assert "loss became" in message and "epoch 2" in message
    assert "still holds the last good checkpoint (epoch 1)" in message
    assert "\n" not in message
    assert snapshot(tmp_path) == before


def test_resume_refuses_another_model_changed_settings_and_finished_runs(tmp_path: Path) -> None:
    out = tmp_path / "m.h5"
    train_model("mlp", epochs=1, out=out, **TINY)
    before = snapshot(tmp_path)
    with pytest.raises(AppError, match=r"checkpoint of the mlp model.*--model cnn"):
        train_model("cnn", epochs=2, resume=out)
    with pytest.raises(AppError, match="--batch-size 16 differs from the checkpoint's 32"):
        train_model(epochs=2, batch_size=16, resume=out)
    with pytest.raises(AppError, match="already holds 1 trained epoch"):
        train_model(resume=out)
    plain = tmp_path / "plain.h5"
    save_model(load_model(out), plain)
    with pytest.raises(AppError, match="no training state"):
        train_model(epochs=2, resume=plain)
    after = snapshot(tmp_path)
    del after["plain.h5"]
    assert after == before


def test_resume_may_change_the_learning_rate(tmp_path: Path) -> None:
    out = tmp_path / "m.h5"
    train_model("mlp", epochs=1, out=out, **TINY)
    result = train_model(epochs=2, lr=0.01, resume=out)
    assert result.history[1]["lr"] == pytest.approx(0.01 * 0.8)


def test_bad_options_are_one_line_app_errors(tmp_path: Path) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"epochs": 0}, "--epochs must be at least 1"),
        ({"lr": -1.0}, "--lr must be a positive number"),
        ({"val_split": 1.0}, r"--val-split must be in \[0, 1\)"),
        ({"model": "resnet"}, "unknown model 'resnet'"),
        ({"optimizer": "rmsprop"}, "unknown optimizer 'rmsprop'"),
        ({"out": tmp_path / "missing" / "m.h5"}, "folder .* does not exist"),
    ]
    for options, message in cases:
        with pytest.raises(AppError, match=message):
            train_model(**{"limit": 32, "out": tmp_path / "m.h5", **options})
    assert not list(tmp_path.iterdir())


def test_device_cuda_trains_on_the_gpu_or_says_none_is_there(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        result = train_model("mlp", epochs=1, device="cuda", out=tmp_path / "m.h5", **TINY)
        assert result.test_accuracy is not None
    else:
        with pytest.raises(AppError, match=r"sees no CUDA GPU.*--device cpu"):
            train_model("mlp", epochs=1, device="cuda", out=tmp_path / "m.h5", **TINY)
        assert not (tmp_path / "m.h5").exists()


def test_train_model_returns_a_model_that_infers_like_its_saved_file(tmp_path: Path) -> None:
    from mnist_cli import infer_model
    from mnist_cli.data import load_embedded

    result = train_model("mlp", epochs=1, out=tmp_path / "m.h5", **TINY)
    test = load_embedded("test")
    from_memory = infer_model(result.model, test.images[:50])
    from_file = infer_model(tmp_path / "m.h5", test.images[:50])
    assert torch.equal(from_memory.logits, from_file.logits)
    assert from_file.probabilities.sum(1).sub(1).abs().max() < 1e-5
