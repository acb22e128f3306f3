"""IDX files (the format MNIST ships in): read from a path or bytes, write atomically.

Layout: two zero bytes, a dtype code (0x08 = unsigned byte, the only one used by MNIST-style
data and the only one read here), the number of dimensions ``ndim``; then ``ndim`` big-endian
uint32 sizes; then ``prod(sizes)`` bytes of data. The whole file may be gzip-compressed, which is
recognised by the gzip magic bytes, never by the file name.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import tempfile
import zlib
from pathlib import Path

import torch

from mnist_cli.data.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
UBYTE_CODE = 0x08
_DTYPE_NAMES = {
    0x08: "unsigned byte",
    0x09: "signed byte",
    0x0B: "int16",
    0x0C: "int32",
    0x0D: "float32",
    0x0E: "float64",
}

StrPath = str | os.PathLike[str]


def read_idx(path: StrPath) -> torch.Tensor:
    """Read an IDX file (raw or gzip) into a uint8 tensor of the shape its header gives."""
    name = os.fspath(path)
    try:
        data = Path(name).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{name}: is a folder, not an IDX file") from None
    except OSError as exc:
        raise DataError(f"{name}: cannot read ({exc.strerror or exc})") from None
    return load_idx_bytes(data, name)


def load_idx_bytes(data: bytes, name: str = "<stdin>") -> torch.Tensor:
    """Parse the bytes of an IDX file (raw or gzip); ``name`` is used in error messages."""
    if not data:
        raise DataError(f"{name}: empty file (zero bytes), expected IDX data")
    if data[:2] == GZIP_MAGIC:
        data = _gunzip(data, name)
        if not data:
            raise DataError(f"{name}: gzip data decompresses to zero bytes, expected IDX data")
    if len(data) < 4:
        raise DataError(f"{name}: truncated IDX header ({len(data)} bytes, need at least 4)")
    zero, code, ndim = data[:2], data[2], data[3]
    if zero != b"\x00\x00":
        raise DataError(
            f"{name}: not an IDX file (wrong magic number 0x{data[:4].hex()}, "
            "expected 0x0000 then a dtype code and a dimension count)"
        )
    if code not in _DTYPE_NAMES:
        raise DataError(f"{name}: not an IDX file (unknown dtype code 0x{code:02x})")
    if code != UBYTE_CODE:
        raise DataError(
            f"{name}: IDX dtype {_DTYPE_NAMES[code]} (0x{code:02x}) is not supported, "
            "expected unsigned byte (0x08)"
        )
    if ndim == 0:
        raise DataError(f"{name}: IDX header declares zero dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(
            f"{name}: truncated IDX header ({len(data)} bytes, {ndim} dimensions need {header})"
        )
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = math.prod(dims)
    actual = len(data) - header
    if actual < expected:
        raise DataError(
            f"{name}: truncated IDX file (header {'x'.join(map(str, dims))} needs "
            f"{expected} data bytes, found {actual})"
        )
    if actual > expected:
        raise DataError(
            f"{name}: IDX byte count mismatch (header {'x'.join(map(str, dims))} needs "
            f"{expected} data bytes, found {actual}: {actual - expected} extra)"
        )
    flat = torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8)
    return flat.reshape(dims)


def _gunzip(data: bytes, name: str) -> bytes:
    try:
        return gzip.decompress(data)
    except EOFError:
        raise DataError(f"{name}: truncated gzip data (the compressed stream ends early)") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"{name}: corrupt gzip data ({exc})") from None


def encode_idx(tensor: torch.Tensor, *, compress: bool = False) -> bytes:
    """The bytes of ``tensor`` (uint8, 1 to 255 dims) as an IDX file, optionally gzip'd.

    Compressed output is reproducible: gzip header with mtime 0 and no file name, level 9.
    """
    if tensor.dtype != torch.uint8:
        raise ValueError(f"write_idx: expected a uint8 tensor, got {tensor.dtype}")
    if not 1 <= tensor.dim() <= 255:
        raise ValueError(
            f"write_idx: expected 1 to 255 dimensions, got shape {tuple(tensor.shape)}"
        )
    header = struct.pack(
        f">2sBB{tensor.dim()}I", b"\x00\x00", UBYTE_CODE, tensor.dim(), *tensor.shape
    )
    payload = header + tensor.detach().to("cpu").contiguous().numpy().tobytes()
    return gzip.compress(payload, compresslevel=9, mtime=0) if compress else payload


def write_idx(path: StrPath, tensor: torch.Tensor, *, compress: bool | None = None) -> None:
    """Write ``tensor`` (uint8) as an IDX file, atomically (temporary file, then rename).

    ``compress=None`` gzips when the file name ends in ``.gz``.
    """
    target = Path(path)
    if compress is None:
        compress = target.suffix == ".gz"
    payload = encode_idx(tensor, compress=compress)
    atomic_write_bytes(target, payload)


def atomic_write_bytes(target: Path, payload: bytes) -> None:
    """Write ``payload`` to ``target`` via a temporary file in the same folder and a rename."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, _file_mode(target))
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _file_mode(target: Path) -> int:
    """The existing file's permissions, else the usual new-file ones (0o666 less the umask)."""
    try:
        return target.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0o022)
        os.umask(umask)
        return 0o666 & ~umask
