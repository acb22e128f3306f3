"""mnist-cli's data layer: IDX files, dataset folders, the embedded sample, downloads, images.

Public API (what the commands call)::

    DataError(SciDevNNError)          one-line message naming the file or folder and the problem
    read_idx(path) -> Tensor          uint8, shape from the IDX header (raw or gzip, by magic)
    load_idx_bytes(data: bytes, name="<stdin>") -> Tensor       same, from bytes
    images_from_idx_bytes(data: bytes, name="<stdin>") -> Dataset   IDX images (N,28,28), no labels
    write_idx(path, tensor, *, compress=None) -> None   atomic; gzip when compress or name *.gz
    Dataset(images, labels, name)     images uint8 (N, 28, 28); labels int64 (N,) or None; len()
    load_idx_folder(directory, split, *, require_labels=False) -> Dataset
    load_embedded(split) -> Dataset   4,000 train / 1,000 test real MNIST digits
    resolve(dataset=None, data_dir=None, download=False, split="train", *,
            require_labels=False) -> Dataset
        dataset: "embedded" | "mnist" | "fashion" | None (None: data_dir if given else embedded)
    default_cache_dir() -> Path       $SCIDEVNN_DATA/mnist or ~/.cache/scidevnn/mnist
    download_mnist(dest_dir, mirrors=None, md5s=None, timeout=30.0, progress=None) -> Path
    load_image(path) -> Tensor        uint8 (28, 28), digit bright on dark, centred like MNIST
    load_images(paths) -> Dataset     uint8 (N, 28, 28), labels None
    prepare_digit(gray, name="<image>") -> Tensor   any uint8 (H, W) -> (28, 28)

``split`` is ``"train"`` or ``"test"`` (MNIST's ``t10k`` files).
"""

from __future__ import annotations

from mnist_cli.data.datasets import (
    Dataset,
    default_cache_dir,
    images_from_idx_bytes,
    load_embedded,
    load_idx_folder,
    resolve,
)
from mnist_cli.data.download import MNIST_MD5, MNIST_MIRRORS, download_mnist
from mnist_cli.data.errors import DataError
from mnist_cli.data.idx import load_idx_bytes, read_idx, write_idx
from mnist_cli.data.images import load_image, load_images, prepare_digit

__all__ = [
    "MNIST_MD5",
    "MNIST_MIRRORS",
    "DataError",
    "Dataset",
    "default_cache_dir",
    "download_mnist",
    "images_from_idx_bytes",
    "load_embedded",
    "load_idx_bytes",
    "load_idx_folder",
    "load_image",
    "load_images",
    "prepare_digit",
    "read_idx",
    "resolve",
    "write_idx",
]
