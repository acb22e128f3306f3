"""Output files: check early that a path can be written, then write it atomically.

Every file the app writes (CSV, JSON, PNG, metrics) goes to a temporary file in the target's
folder that is renamed over the target in one step, so an interrupted run never leaves half a
file and a failed one leaves the old file as it was.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mnist_cli.errors import AppError


def check_output_path(path: Path, what: str) -> Path:
    """Return ``path`` if a file can be created there; else raise ``AppError`` saying why.

    Checks, before any work is done: the folder exists, is a folder, accepts a new file (a
    probe file is created and removed: permission bits alone do not tell, e.g. for root or a
    read-only mount), and ``path`` itself is not a folder.
    """
    folder = path.parent
    if not folder.exists():
        raise AppError(f"cannot write the {what} '{path}': the folder '{folder}' does not exist")
    if not folder.is_dir():
        raise AppError(f"cannot write the {what} '{path}': '{folder}' is not a folder")
    if path.is_dir():
        raise AppError(f"cannot write the {what} '{path}': it is a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".mnist-cli-probe-"):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise AppError(
            f"cannot write the {what} '{path}': the folder '{folder}' is not writable ({reason})"
        ) from None
    return path


@contextlib.contextmanager
def atomic_path(path: Path, what: str) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one step."""
    check_output_path(path, what)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    temporary = Path(name)
    try:
        yield temporary
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def write_bytes_atomic(path: Path, data: bytes, what: str) -> None:
    """Write ``data`` to ``path`` atomically (see ``atomic_path``)."""
    with atomic_path(path, what) as temporary:
        temporary.write_bytes(data)


def write_text_atomic(path: Path, text: str, what: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see ``atomic_path``)."""
    write_bytes_atomic(path, text.encode("utf-8"), what)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
