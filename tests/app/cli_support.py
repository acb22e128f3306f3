"""Helpers shared by the mnist-cli tests: run the real command, build small data and models.

Nothing here touches the network or ``../shared``: data comes from the app's embedded sample.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from mnist_cli.data import load_embedded, write_idx

#: The installed console script, as a user runs it (next to this interpreter, in its venv).
MNIST_CLI = Path(sys.executable).with_name("mnist-cli")


def command(*args: object) -> list[str]:
    """The command line that runs the real ``mnist-cli`` console script with ``args``."""
    assert MNIST_CLI.exists(), f"{MNIST_CLI} is missing: install apps/mnist_cli in this venv"
    return [str(MNIST_CLI), *map(str, args)]


@dataclass(frozen=True)
class Result:
    """A finished ``mnist-cli`` process."""

    returncode: int
    stdout: str
    stderr: str


def cli_env(cwd: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a test run: no debug, no download cache outside ``cwd``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCIDEVNN_")}
    env.pop("COLUMNS", None)
    env["SCIDEVNN_DATA"] = str(cwd / ".data-cache")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra or {})
    return env


def cli(
    *args: object,
    cwd: Path,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 180,
) -> Result:
    """Run the real ``mnist-cli ARGS`` console script in ``cwd``."""
    process = subprocess.run(
        command(*args),
        cwd=cwd,
        input=stdin if stdin is not None else b"",
        capture_output=True,
        timeout=timeout,
        env=cli_env(cwd, env),
    )
    return Result(
        process.returncode,
        process.stdout.decode("utf-8", "replace"),
        process.stderr.decode("utf-8", "replace"),
    )


def cli_many(
    runs: Sequence[tuple[Sequence[object], Path, bytes | None, Mapping[str, str] | None]],
    workers: int = 3,
) -> list[Result]:
    """Run several commands concurrently (each is mostly interpreter start-up)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [
            pool.submit(cli, *args, cwd=cwd, stdin=stdin, env=env) for args, cwd, stdin, env in runs
        ]
        return [future.result() for future in futures]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) -> SHA-256 of its bytes."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def write_idx_folder(
    folder: Path, count: int = 60, split: str = "test", labels: bool = True
) -> Path:
    """A folder with ``count`` real digits (from the embedded test sample) as IDX files."""
    folder.mkdir(parents=True, exist_ok=True)
    sample = load_embedded("test")
    prefix = "t10k" if split == "test" else "train"
    write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", sample.images[:count])
    if labels:
        assert sample.labels is not None
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", sample.labels[:count].to(torch.uint8))
    return folder


def write_digit_pngs(folder: Path, count: int = 3) -> list[tuple[Path, int]]:
    """PNG files of real digits at other sizes; the second one black on white."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    sample = load_embedded("test")
    assert sample.labels is not None
    files = []
    for i in range(count):
        image = Image.fromarray(sample.images[i].numpy()).resize((84 + 10 * i, 96))
        if i == 1:
            image = Image.eval(image, lambda v: 255 - v)
        path = folder / f"digit{i}.png"
        image.save(path)
        files.append((path, int(sample.labels[i])))
    return files


def model_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every dataset under ``/model`` and ``/optimizer`` of a model file, by HDF5 path."""
    arrays: dict[str, np.ndarray] = {}

    def visit(name: str, item: object) -> None:
        if isinstance(item, h5py.Dataset) and (
            name.startswith("model/") or name.startswith("optimizer/")
        ):
            arrays[name] = np.asarray(item[()])

    with h5py.File(path, "r") as file:
        file.visititems(visit)
    return arrays


def assert_same_arrays(a: Path, b: Path) -> None:
    """The two files hold bit-identical weights, buffers and optimizer state."""
    left, right = model_arrays(a), model_arrays(b)
    assert left.keys() == right.keys()
    assert any(name.startswith("model/") for name in left)
    for name in left:
        assert left[name].dtype == right[name].dtype, name
        assert left[name].tobytes() == right[name].tobytes(), f"{name} differs"
