"""Datasets of 28x28 digit images: IDX folders, the embedded sample, named data sources.

A folder is searched for the standard file names MNIST and Fashion-MNIST publish
(``train-images-idx3-ubyte.gz`` ...), raw or gzip, also with the dotted variant some copies use
(``train-images.idx3-ubyte``), directly in the folder or in torchvision's ``MNIST/raw/`` or
``FashionMNIST/raw/`` below it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import torch

from mnist_cli.data.errors import DataError
from mnist_cli.data.idx import StrPath, load_idx_bytes, read_idx

Split = Literal["train", "test"]
DatasetName = Literal["embedded", "mnist", "fashion"]

IMAGE_SIZE = 28
NUM_CLASSES = 10
_PREFIX: dict[str, str] = {"train": "train", "test": "t10k"}
_SUBFOLDERS = ("", "MNIST/raw", "FashionMNIST/raw", "raw")
FASHION_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets/fashion-mnist"),)
EMBEDDED_PACKAGE = "mnist_cli.data"
EMBEDDED_FOLDER = "embedded"


@dataclass(frozen=True)
class Dataset:
    """Images ``uint8 (N, 28, 28)``, labels ``int64 (N,)`` in 0..9 or None, and a display name."""

    images: torch.Tensor
    labels: torch.Tensor | None
    name: str

    def __post_init__(self) -> None:
        shape = tuple(self.images.shape)
        if self.images.dtype != torch.uint8 or len(shape) != 3 or shape[1:] != (28, 28):
            raise DataError(
                f"{self.name}: images must be uint8 (N, 28, 28), got {self.images.dtype} {shape}"
            )
        labels = self.labels
        if labels is not None and (labels.dtype != torch.int64 or labels.shape != (shape[0],)):
            raise DataError(
                f"{self.name}: labels must be int64 ({shape[0]},), got "
                f"{labels.dtype} {tuple(labels.shape)}"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _candidates(split: Split, kind: Literal["images", "labels"]) -> list[str]:
    stem = f"{_PREFIX[split]}-{kind}"
    rank = "idx3" if kind == "images" else "idx1"
    names = [f"{stem}-{rank}-ubyte", f"{stem}.{rank}-ubyte"]
    return [n + ext for n in names for ext in (".gz", "")]


def _find(folder: Path, split: Split, kind: Literal["images", "labels"]) -> Path | None:
    for sub in _SUBFOLDERS:
        base = folder / sub if sub else folder
        for name in _candidates(split, kind):
            path = base / name
            if path.is_file():
                return path
    return None


def _check_split(split: str) -> None:
    if split not in _PREFIX:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def load_idx_folder(directory: StrPath, split: Split, *, require_labels: bool = False) -> Dataset:
    """Load one split (``"train"`` or ``"t10k"`` files) of an MNIST-style folder.

    Labels are None when the folder has the images but no labels file, unless
    ``require_labels``. A folder holding only the test files serves ``split="test"``.
    """
    _check_split(split)
    folder = Path(directory)
    if not folder.exists():
        raise DataError(f"{folder}: data folder does not exist")
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder (expected a folder of IDX files)")
    images_path = _find(folder, split, "images")
    labels_path = _find(folder, split, "labels")
    if images_path is None or (require_labels and labels_path is None):
        wanted = [_candidates(split, "images")[0]]
        if require_labels or labels_path is None:
            wanted.append(_candidates(split, "labels")[0])
        what = "folder is empty" if not any(folder.iterdir()) else f"no {split} data found"
        raise DataError(
            f"{folder}: {what}: looked for {' and '.join(wanted)} (raw or .gz, also in MNIST/raw/)"
        )
    name = str(folder)
    images = _as_images(read_idx(images_path), str(images_path))
    labels = None
    if labels_path is not None:
        labels = _as_labels(read_idx(labels_path), str(labels_path))
        if labels.shape[0] != images.shape[0]:
            raise DataError(
                f"{folder}: {images_path.name} has {images.shape[0]} images but "
                f"{labels_path.name} has {labels.shape[0]} labels"
            )
    return Dataset(images, labels, name)


def _as_images(tensor: torch.Tensor, name: str) -> torch.Tensor:
    shape = tuple(tensor.shape)
    if len(shape) != 3 or shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(f"{name}: expected images of shape (N, 28, 28), got {shape}")
    return tensor


def _as_labels(tensor: torch.Tensor, name: str) -> torch.Tensor:
    if tensor.dim() != 1:
        raise DataError(f"{name}: expected labels of shape (N,), got {tuple(tensor.shape)}")
    if tensor.numel() and int(tensor.max()) >= NUM_CLASSES:
        raise DataError(f"{name}: label {int(tensor.max())} out of range 0..9")
    return tensor.to(torch.int64)


def images_from_idx_bytes(data: bytes, name: str = "<stdin>") -> Dataset:
    """A label-less Dataset from the bytes of an IDX images file (e.g. read from stdin)."""
    return Dataset(_as_images(load_idx_bytes(data, name), name), None, name)


def load_embedded(split: Split) -> Dataset:
    """The embedded sample of real MNIST digits: 4,000 for ``"train"``, 1,000 for ``"test"``."""
    _check_split(split)
    folder = resources.files(EMBEDDED_PACKAGE).joinpath(EMBEDDED_FOLDER)

    def read(kind: Literal["images", "labels"]) -> torch.Tensor:
        name = _candidates(split, kind)[0]
        res = folder.joinpath(name)
        try:
            data = res.read_bytes()
        except OSError:
            raise DataError(f"embedded sample: {name} missing from the installed package") from None
        return load_idx_bytes(data, f"embedded:{name}")

    images = _as_images(read("images"), f"embedded {split} images")
    labels = _as_labels(read("labels"), f"embedded {split} labels")
    if labels.shape[0] != images.shape[0]:
        raise DataError(f"embedded sample: {images.shape[0]} images but {labels.shape[0]} labels")
    return Dataset(images, labels, f"embedded MNIST sample ({split})")


def default_cache_dir() -> Path:
    """Where downloaded MNIST lives: ``$SCIDEVNN_DATA/mnist``, else ``~/.cache/scidevnn/mnist``."""
    base = os.environ.get("SCIDEVNN_DATA")
    if base:
        return Path(base).expanduser() / "mnist"
    xdg = os.environ.get("XDG_CACHE_HOME")
    root = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return root / "scidevnn" / "mnist"


def resolve(
    dataset: DatasetName | None = None,
    data_dir: StrPath | None = None,
    download: bool = False,
    split: Split = "train",
    *,
    require_labels: bool = False,
) -> Dataset:
    """One split of a named data source.

    - ``data_dir`` alone (or with ``"mnist"``/``"fashion"``): that folder.
    - ``"embedded"`` (the default when nothing is given): the sample shipped with the app.
    - ``"fashion"``: Debian's ``/usr/share/datasets/fashion-mnist`` (``dataset-fashion-mnist``).
    - ``"mnist"``: the cache folder (:func:`default_cache_dir`); ``download=True`` fetches the
      missing files first.
    """
    _check_split(split)
    if dataset not in (None, "embedded", "mnist", "fashion"):
        raise DataError(f"unknown dataset {dataset!r}: choose embedded, mnist or fashion")
    if dataset == "embedded" and data_dir is not None:
        raise DataError("the embedded dataset takes no data folder: give a dataset or a folder")
    if download and dataset != "mnist":
        raise DataError("download is only available for the mnist dataset")
    if (dataset is None and data_dir is None) or dataset == "embedded":
        return load_embedded(split)
    if dataset == "fashion" and data_dir is None:
        for folder in FASHION_DIRS:
            if folder.is_dir():
                return load_idx_folder(folder, split, require_labels=require_labels)
        raise DataError(
            f"Fashion-MNIST not found in {', '.join(map(str, FASHION_DIRS))}: install it with "
            "'apt-get install dataset-fashion-mnist' or give its folder with --data"
        )
    if dataset == "mnist":
        folder = Path(data_dir) if data_dir is not None else default_cache_dir()
        if download:
            from mnist_cli.data.download import download_mnist

            download_mnist(folder)
        elif _find(folder, split, "images") is None:
            raise DataError(
                f"{folder}: MNIST {split} files not found; fetch them with --download "
                "(or set SCIDEVNN_DATA)"
            )
        return load_idx_folder(folder, split, require_labels=require_labels)
    assert data_dir is not None
    return load_idx_folder(data_dir, split, require_labels=require_labels)
