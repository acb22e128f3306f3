"""``mnist-cli train --nproc 2``: a model ``infer`` loads; resuming with another worker count."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from mnist_cli import TrainResult, load_model, train_model
from mnist_cli.models import build_model
from scidevnn import distributed as sdist


def mnist_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COLUMNS="200", SCIDEVNN_DIST_TIMEOUT="60")
    return subprocess.run(
        [str(Path(sys.executable).with_name("mnist-cli")), *args],  # the real console script
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_train_nproc_2_writes_one_model_that_infer_loads(tmp_path: Path) -> None:
    trained = mnist_cli(
        "train", "--model", "cnn", "--epochs", "1", "--limit", "256", "--nproc", "2",
        "--out", "cnn.h5", cwd=tmp_path,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert "data-parallel: 2 workers (gloo" in trained.stdout
    assert "saved cnn.h5, cnn.metrics.jsonl" in trained.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cnn.h5", "cnn.metrics.jsonl"]
    reference = build_model("cnn").state_dict()
    model = load_model(tmp_path / "cnn.h5")
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        k: v.shape for k, v in reference.items()
    }
    inferred = mnist_cli("infer", "cnn.h5", "--dataset", "embedded", "--show", "0", cwd=tmp_path)
    assert inferred.returncode == 0, inferred.stderr
    assert "accuracy" in inferred.stdout


def test_resume_with_a_different_number_of_workers_continues_the_same_run(
    tmp_path: Path,
) -> None:
    """1 epoch on 2 workers + 1 on one process == 1 on one process + 1 on 2 workers == 2 on one
    process: every batch is the one-process batch, split (MLP: no BatchNorm statistics)."""

    def fresh(epochs: int, out: str, nproc: int = 1) -> TrainResult:
        return train_model(
            "mlp", epochs=epochs, out=tmp_path / out, nproc=nproc, limit=300, batch_size=50, seed=3
        )

    straight = fresh(2, "straight.h5")
    fresh(1, "a.h5", nproc=2)
    train_model(epochs=2, resume=tmp_path / "a.h5")
    fresh(1, "b.h5")
    from_one = train_model(epochs=2, resume=tmp_path / "b.h5", nproc=2)
    assert not sdist.is_initialized()
    expected = load_model(tmp_path / "straight.h5").state_dict()
    for name in ("a.h5", "b.h5"):
        state = load_model(tmp_path / name).state_dict()
        for key, value in expected.items():
            difference = (state[key] - value).abs().max().item()
            assert difference <= 1e-6, f"{name} {key}: {difference:.3g}"
    assert from_one.epochs_run == 1
    assert [row["epoch"] for row in from_one.history] == [1, 2]
    for ours, theirs in zip(from_one.history, straight.history, strict=True):
        assert abs(ours["loss"] - theirs["loss"]) <= 1e-6
        assert abs(ours["accuracy"] - theirs["accuracy"]) <= 1 / 300  # a tie may flip at most
    assert from_one.test_accuracy is not None and straight.test_accuracy is not None
    assert abs(from_one.test_accuracy - straight.test_accuracy) <= 1 / 300
    assert isinstance(from_one.model.state_dict()["1.weight"], torch.Tensor)
