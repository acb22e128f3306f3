"""STUB: HDF5 model storage (to be written)."""

from pathlib import Path
from typing import Any

from scidevnn.module import Module


def save_model(model: Module, path: str | Path, **kwargs: Any) -> None:
    raise NotImplementedError


def load_model(path: str | Path) -> Module:
    raise NotImplementedError
