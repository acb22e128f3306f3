"""Conversions shared by the storage modules: JSON text, tensors <-> HDF5 arrays, messages.

Everything in a model file is a plain HDF5 type: numeric arrays, and variable-length UTF-8
strings holding JSON. Nothing is pickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

import h5py
import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from scidevnn.errors import ModelFileError

E = TypeVar("E", bound=ModelFileError)

#: HDF5 variable-length UTF-8 string, used for every string dataset.
STRING_DTYPE = h5py.string_dtype(encoding="utf-8")

#: The tensor dtypes a model file can hold, by their (native byte order) NumPy dtype.
_TORCH_DTYPES: dict[np.dtype[Any], torch.dtype] = {
    np.dtype(np.float16): torch.float16,
    np.dtype(np.float32): torch.float32,
    np.dtype(np.float64): torch.float64,
    np.dtype(np.complex64): torch.complex64,
    np.dtype(np.complex128): torch.complex128,
    np.dtype(np.int8): torch.int8,
    np.dtype(np.int16): torch.int16,
    np.dtype(np.int32): torch.int32,
    np.dtype(np.int64): torch.int64,
    np.dtype(np.uint8): torch.uint8,
    np.dtype(np.bool_): torch.bool,
}
_SUPPORTED = frozenset(_TORCH_DTYPES.values())


def file_error(cls: type[E], path: Path | str, group: str, message: str) -> E:
    """``cls("model file 'PATH', group 'GROUP': MESSAGE")`` on one line."""
    return cls(f"model file '{path}', group '{group}': {one_line(message)}")


def one_line(text: object) -> str:
    """``str(text)`` with line breaks folded, for messages built from other errors."""
    return " ".join(str(text).split())


def to_json(value: Any) -> str:
    """JSON text of ``value`` (tuples become lists); ``TypeError`` for anything not JSON."""
    return json.dumps(value)


def lists_to_tuples(value: Any) -> Any:
    """Turn every JSON list inside ``value`` back into a tuple (dict values included)."""
    if isinstance(value, list):
        return tuple(lists_to_tuples(item) for item in value)
    if isinstance(value, dict):
        return {key: lists_to_tuples(item) for key, item in value.items()}
    return value


def tensor_to_array(tensor: Tensor) -> npt.NDArray[Any]:
    """A CPU NumPy copy of ``tensor``; ``TypeError`` for a dtype HDF5 cannot hold natively."""
    if tensor.dtype not in _SUPPORTED:
        raise TypeError(f"tensors of dtype {tensor.dtype} cannot be stored")
    return tensor.detach().cpu().contiguous().numpy()


def torch_dtype_of(dataset: h5py.Dataset) -> torch.dtype | None:
    """The tensor dtype a dataset holds, or ``None`` when it is not a tensor (strings...)."""
    dtype = dataset.dtype
    if dtype.byteorder in "<>":
        dtype = dtype.newbyteorder("=")
    return _TORCH_DTYPES.get(dtype)


def read_tensor(dataset: h5py.Dataset) -> Tensor:
    """The dataset as a CPU tensor, in native byte order (caller checked ``torch_dtype_of``)."""
    array = np.asarray(dataset[()])
    native = np.require(array, dtype=array.dtype.newbyteorder("="), requirements=["C", "W"])
    return torch.from_numpy(native)


def text_of(value: object) -> str | None:
    """A string read from h5py (``str``, or UTF-8 ``bytes`` from a dataset); else ``None``."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return value if isinstance(value, str) else None
