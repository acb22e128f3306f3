"""Every bad input gets one clear line on stderr, exit code 2, no traceback, and changes nothing.

The cases run the real command in subprocesses, side by side, in one shared folder of inputs
(a model file, broken IDX folders, broken model files, a non-image...); a snapshot of that
folder before and after shows that no case wrote, replaced or left behind any file.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from cli_support import Result, cli_many, snapshot, write_digit_pngs, write_idx_folder
from typer.testing import CliRunner

from mnist_cli import load_model, save_model, train_model
from mnist_cli.cli import app
from mnist_cli.data import load_embedded, write_idx
from scidevnn.plugins import reset_registry


@dataclass(frozen=True)
class Case:
    id: str
    args: list[str]
    message: str  # a regular expression the error line must match
    stdin: bytes | None = None
    env: dict[str, str] = field(default_factory=dict)


def unwritable_folder(root: Path) -> Path:
    """A folder no new file can be created in (root ignores permission bits: use /sys)."""
    if os.geteuid() == 0:
        return Path("/sys")
    folder = root / "readonly"
    folder.mkdir()
    folder.chmod(0o500)
    return folder


def build_inputs(root: Path) -> Path:
    """The shared folder every case runs in."""
    train_model("mlp", epochs=1, limit=64, out=root / "m.h5")
    train_model("cnn", epochs=1, limit=32, batch_size=16, out=root / "cnn.h5")
    shutil.copy(root / "m.h5", root / "existing.h5")
    save_model(load_model(root / "m.h5"), root / "plain.h5")
    write_idx_folder(root / "gone", count=32, split="train")
    write_idx_folder(root / "gone", count=8, split="test")
    train_model("mlp", epochs=1, data=root / "gone", out=root / "folder.h5")
    shutil.rmtree(root / "gone")
    (root / "empty").mkdir()
    write_idx_folder(root / "idx", count=20)
    write_idx_folder(root / "nolabels", count=20, labels=False)
    write_digit_pngs(root / "png", count=1)
    (root / "notimage.png").write_bytes(b"this is text, not a picture\n")

    sample = load_embedded("train")
    assert sample.labels is not None
    images, labels = sample.images[:10], sample.labels[:10].to(torch.uint8)

    def idx_folder(name: str, images_bytes: bytes | None = None, n_labels: int = 10) -> None:
        folder = root / name
        folder.mkdir()
        write_idx(folder / "train-labels-idx1-ubyte", labels[:n_labels])
        if images_bytes is None:
            write_idx(folder / "train-images-idx3-ubyte", images)
        else:
            (folder / "train-images-idx3-ubyte").write_bytes(images_bytes)

    full = (root / "idx" / "t10k-images-idx3-ubyte.gz").read_bytes()
    raw = gzip.decompress(full)
    idx_folder("truncated", raw[: len(raw) // 2])
    idx_folder("zerobyte", b"")
    idx_folder("magic", b"\x12\x34" + raw[2:])
    idx_folder("mismatch", n_labels=9)

    data = (root / "m.h5").read_bytes()
    (root / "notmodel.h5").write_text("not a model\n")
    (root / "truncated.h5").write_bytes(data[: len(data) // 2])
    shutil.copy(root / "plain.h5", root / "newer.h5")
    with h5py.File(root / "newer.h5", "r+") as file:
        file.attrs["format_version"] = np.int64(99)
    return root


TRAIN = ["train", "--limit", "32", "--epochs", "1", "--out", "existing.h5"]
PNG = "png/digit0.png"
#: ``{unwritable}`` in an argument stands for a folder no file can be created in.
CASES = [
    Case("data-folder-missing", [*TRAIN, "--data", "nowhere"], r"nowhere: .*does not exist"),
    Case("data-folder-empty", [*TRAIN, "--data", "empty"], r"empty: folder is empty"),
    Case("idx-truncated", [*TRAIN, "--data", "truncated"], r"truncated IDX file"),
    Case("idx-zero-bytes", [*TRAIN, "--data", "zerobyte"], r"empty file \(zero bytes\)"),
    Case("idx-wrong-magic", [*TRAIN, "--data", "magic"], r"wrong magic number"),
    Case("idx-count-mismatch", [*TRAIN, "--data", "mismatch"], r"10 images but .*9 labels"),
    Case("model-not-hdf5", ["infer", "notmodel.h5", PNG], r"notmodel.h5.*not an HDF5 file"),
    Case("model-truncated", ["infer", "truncated.h5", PNG], r"truncated.h5.*truncated"),
    Case("model-newer-format", ["infer", "newer.h5", PNG], r"format version 99.*upgrade"),
    Case(
        "model-needs-missing-plugin",
        ["infer", "cnn.h5", PNG],
        r"cnn.h5.*Conv2d.*scidevnn-cnn is installed but not loaded.*SCIDEVNN_BLOCK_PLUGINS",
        env={"SCIDEVNN_BLOCK_PLUGINS": "cnn"},
    ),
    Case("model-file-missing", ["infer", "gone.h5", PNG], r"gone.h5.*does not exist"),
    Case("image-not-an-image", ["infer", "m.h5", "notimage.png"], r"notimage.png.*not an image"),
    Case("image-missing", ["infer", "m.h5", "nothere.png"], r"nothere.png: no such image file"),
    Case(
        "nothing-to-classify",
        ["infer", "plain.h5"],
        r"nothing to classify.*plain.h5 records no training data",
    ),
    Case(
        "recorded-folder-gone",
        ["evaluate", "folder.h5"],
        r"folder.h5 was trained on the folder .*gone, which no longer exists: .*--data DIR",
    ),
    Case(
        "stdin-not-idx",
        ["infer", "m.h5", "-"],
        r"<stdin>: not an IDX file",
        stdin=b"hello, these are not digits",
    ),
    Case("stdin-empty", ["infer", "m.h5", "-"], r"<stdin>: empty file", stdin=b""),
    Case(
        "csv-folder-missing",
        ["infer", "m.h5", PNG, "--output", "nowhere/p.csv"],
        r"CSV file 'nowhere/p.csv'.*folder 'nowhere' does not exist",
    ),
    Case(
        "json-folder-missing",
        ["evaluate", "m.h5", "--data", "idx", "--json", "nowhere/e.json"],
        r"JSON file 'nowhere/e.json'.*folder 'nowhere' does not exist",
    ),
    Case(
        "model-out-unwritable",
        ["train", "--limit", "32", "--epochs", "1", "--out", "{unwritable}/m.h5"],
        r"model file '.*/m.h5'.*folder '.*' is not writable",
    ),
    Case("model-out-is-a-folder", [*TRAIN[:-1], "idx"], r"'idx'.*it is a folder"),
    Case(
        "plot-folder-missing",
        [*TRAIN, "--plot", "nowhere/c.png"],
        r"plot 'nowhere/c.png'.*does not exist",
    ),
    Case(
        "resume-other-model",
        ["train", "--model", "cnn", "--resume", "m.h5", "--epochs", "2", "--out", "x.h5"],
        r"m.h5 is a checkpoint of the mlp model.*--model cnn",
    ),
    Case(
        "resume-not-a-checkpoint",
        ["train", "--resume", "plain.h5", "--epochs", "2", "--out", "x.h5"],
        r"plain.h5: holds a model but no training state",
    ),
    Case("evaluate-without-labels", ["evaluate", "m.h5", "--data", "nolabels"], r"t10k-labels"),
    Case("epochs-zero", [*TRAIN, "--epochs", "0"], r"--epochs must be at least 1"),
]
if not torch.cuda.is_available():
    CASES.append(Case("no-cuda", [*TRAIN, "--device", "cuda"], r"sees no CUDA GPU.*--device cpu"))


#: Cases also run through the real console script (one per kind of error): each takes an
#: interpreter start-up, so the full list runs in-process with typer's CliRunner.
REAL_COMMAND = [
    "idx-truncated",
    "model-not-hdf5",
    "model-needs-missing-plugin",
    "image-not-an-image",
    "stdin-not-idx",
    "model-out-unwritable",
    "resume-other-model",
]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_inputs(tmp_path_factory.mktemp("bad-input"))


def expand(case: Case, root: Path) -> list[str]:
    unwritable = str(unwritable_folder(root))
    return [arg.replace("{unwritable}", unwritable) for arg in case.args]


def check_error_line(stderr: str, case: Case) -> None:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    assert re.search(case.message, lines[0]), lines[0]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_gives_one_line_exit_code_2_and_changes_nothing(
    root: Path, case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(root)
    for name in [name for name in os.environ if name.startswith("SCIDEVNN_")]:
        monkeypatch.delenv(name)
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    args = expand(case, root)
    before = snapshot(root)
    reset_registry()  # plugins are found again under this case's environment
    try:
        result = CliRunner().invoke(app, args, input=case.stdin)
    finally:
        reset_registry()
    assert result.exit_code == 2, (result.stdout, result.stderr, result.exception)
    check_error_line(result.stderr, case)
    assert "Traceback" not in result.stdout + result.stderr
    assert snapshot(root) == before


@pytest.fixture(scope="module")
def real(root: Path) -> tuple[dict[str, Result], bool]:
    """The REAL_COMMAND cases through ``python -m mnist_cli``, side by side."""
    chosen = [case for case in CASES if case.id in REAL_COMMAND]
    before = snapshot(root)
    results = cli_many([(expand(case, root), root, case.stdin, case.env) for case in chosen])
    unchanged = snapshot(root) == before
    return {case.id: result for case, result in zip(chosen, results, strict=True)}, unchanged


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.id in REAL_COMMAND], ids=lambda case: case.id
)
def test_bad_input_through_the_real_command(
    real: tuple[dict[str, Result], bool], case: Case
) -> None:
    result = real[0][case.id]
    assert result.returncode == 2, (result.stdout, result.stderr)
    check_error_line(result.stderr, case)
    assert "Traceback" not in result.stdout + result.stderr
    assert real[1], "a failing command changed a file"


def test_debug_variable_shows_the_traceback(tmp_path: Path) -> None:
    (tmp_path / "notmodel.h5").write_text("no")
    (result,) = cli_many(
        [(["infer", "notmodel.h5", "x.png"], tmp_path, None, {"SCIDEVNN_DEBUG": "1"})]
    )
    assert result.returncode == 2
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("error: ")


def test_an_unexpected_error_is_exit_code_1_with_a_hint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import mnist_cli.cli

    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(mnist_cli.cli, "read_model", broken)
    monkeypatch.delenv("SCIDEVNN_DEBUG", raising=False)
    result = CliRunner().invoke(app, ["infer", str(tmp_path / "m.h5"), "x.png"])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: internal error: ZeroDivisionError: a bug (set SCIDEVNN_DEBUG=1 to see the "
        "traceback)"
    )
