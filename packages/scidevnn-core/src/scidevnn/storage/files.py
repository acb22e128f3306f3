"""The model file on disk: atomic writing, and opening for reading with clear errors.

A save writes a temporary file in the target's directory, flushes it to disk and renames it
over the target in one step (``os.replace``), so a reader sees either the old file or the new
one, never half of one; on any failure the temporary file is removed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import h5py

from scidevnn.errors import (
    ModelFileError,
    ModelFileNotFoundError,
    NotHDF5Error,
    TruncatedFileError,
)
from scidevnn.storage.encoding import file_error, one_line

#: The eight bytes every HDF5 superblock starts with.
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _save_error(path: Path, reason: str) -> ModelFileError:
    return ModelFileError(f"cannot save model file '{path}': {one_line(reason)}")


def _create_temporary(path: Path) -> Path:
    """A new empty file next to ``path`` (mode from the umask, like any new file)."""
    for _ in range(100):
        candidate = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return candidate
    raise FileExistsError(f"no free temporary file name in {path.parent}")


def _fsync(path: Path, directory: bool = False) -> None:
    flags = os.O_RDONLY if directory else os.O_RDWR
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` atomically.

    Any exception (an ``OSError`` becomes ``ModelFileError``) removes the temporary file and
    leaves whatever was at ``path`` untouched.
    """
    directory = path.parent
    if not directory.is_dir():
        reason = "is not a directory" if directory.exists() else "does not exist"
        raise _save_error(path, f"the directory '{directory}' {reason}")
    if path.is_dir():
        raise _save_error(path, "a directory of that name is in the way")
    try:
        temporary = _create_temporary(path)
    except OSError as exc:
        problem = "is not writable" if isinstance(exc, PermissionError) else "refuses a new file"
        raise _save_error(
            path, f"the directory '{directory}' {problem} ({exc.strerror or exc})"
        ) from exc
    try:
        yield temporary
        _fsync(temporary)
        os.replace(temporary, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            temporary.unlink()
        if isinstance(exc, OSError):
            raise _save_error(path, str(exc)) from exc
        raise
    if os.name == "posix":  # make the rename itself durable
        with contextlib.suppress(OSError):
            _fsync(directory, directory=True)


def _find_signature(path: Path) -> tuple[bool, bytes, int]:
    """(signature found, first bytes, size); HDF5 allows a user block of 512 * 2**k bytes."""
    with open(path, "rb") as stream:
        head = stream.read(len(HDF5_SIGNATURE))
        size = os.fstat(stream.fileno()).st_size
        offset = 0
        while offset + len(HDF5_SIGNATURE) <= size:
            stream.seek(offset)
            if stream.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
                return True, head, size
            offset = 512 if offset == 0 else offset * 2
    return False, head, size


@contextlib.contextmanager
def open_for_reading(path: Path) -> Iterator[h5py.File]:
    """Open an HDF5 file read-only, sorting out missing, non-HDF5 and damaged files."""
    if not path.exists():
        raise ModelFileNotFoundError(f"model file '{path}' does not exist")
    if path.is_dir():
        raise ModelFileError(f"model file '{path}' is a directory, not a file")
    try:
        found, head, size = _find_signature(path)
    except OSError as exc:
        raise ModelFileError(
            f"cannot read model file '{path}': {exc.strerror or one_line(exc)}"
        ) from exc
    if not found:
        if 0 < size < len(HDF5_SIGNATURE) and HDF5_SIGNATURE.startswith(head):
            raise file_error(TruncatedFileError, path, "/", f"the file is truncated ({size} bytes)")
        what = "is empty" if size == 0 else f"has no HDF5 signature (it starts with {head!r})"
        raise file_error(NotHDF5Error, path, "/", f"not an HDF5 file: it {what}")
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise file_error(
            TruncatedFileError,
            path,
            "/",
            f"the file is truncated or damaged: HDF5 cannot open it ({exc})",
        ) from exc
    with handle:
        yield handle
