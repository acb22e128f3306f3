"""Fetch the four MNIST files from public mirrors, MD5-checked, never leaving a partial file."""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from mnist_cli.data.errors import DataError
from mnist_cli.data.idx import StrPath

# torchvision's mirrors first (AWS copy, then the original page), then the TensorFlow one.
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
MNIST_MD5: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
_CHUNK = 1 << 20


def file_md5(path: Path) -> str:
    """Hex MD5 of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def download_mnist(
    dest_dir: StrPath,
    mirrors: Sequence[str] | None = None,
    md5s: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    progress: Callable[[str, str], None] | None = None,
) -> Path:
    """Make sure ``dest_dir`` holds every file of ``md5s`` (default: the four MNIST files).

    A file already there with the right MD5 is kept; otherwise each mirror is tried in turn
    (``mirror + file name``) until one serves bytes with the right MD5. Each download goes to a
    temporary file in ``dest_dir`` that is renamed into place only once verified, so an
    interrupted or failed download leaves nothing behind. ``progress(file_name, url)`` is called
    before each attempt. Returns the folder; raises DataError when a file cannot be fetched.
    """
    folder = Path(dest_dir).expanduser()
    mirror_list = tuple(MNIST_MIRRORS if mirrors is None else mirrors)
    sums = dict(MNIST_MD5 if md5s is None else md5s)
    if not mirror_list:
        raise DataError("download: no mirrors given")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"{folder}: cannot create download folder ({exc.strerror or exc})"
        ) from None
    for name, md5 in sums.items():
        target = folder / name
        if target.is_file() and file_md5(target) == md5:
            continue
        failures: list[str] = []
        for mirror in mirror_list:
            url = mirror.rstrip("/") + "/" + name
            if progress is not None:
                progress(name, url)
            problem = _fetch(url, target, md5, timeout)
            if problem is None:
                break
            failures.append(f"{url}: {problem}")
        else:
            raise DataError(f"download of {name} failed from every mirror ({'; '.join(failures)})")
    return folder


def _fetch(url: str, target: Path, md5: str, timeout: float) -> str | None:
    """Download ``url`` to ``target`` if its MD5 is ``md5``; returns None or what went wrong."""
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5(usedforsecurity=False)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                expected = resp.headers.get("Content-Length")
                received = 0
                while chunk := resp.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    received += len(chunk)
                if expected is not None and expected.isdigit() and received != int(expected):
                    return f"incomplete download ({received} of {expected} bytes)"
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code} {exc.reason}"
        except urllib.error.URLError as exc:
            return str(exc.reason)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            return str(exc) or type(exc).__name__
        if digest.hexdigest() != md5:
            return f"MD5 mismatch (got {digest.hexdigest()}, expected {md5})"
        os.replace(tmp, target)
        return None
    finally:
        tmp.unlink(missing_ok=True)
