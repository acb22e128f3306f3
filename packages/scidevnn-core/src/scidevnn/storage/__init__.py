"""HDF5 model files: ``save_model``, ``load_model`` and, to resume training, ``load_checkpoint``.

See ``model_file`` for the layout. Errors are ``scidevnn.errors.ModelFileError`` subclasses.
"""

from __future__ import annotations

from scidevnn.storage.model_file import (
    FORMAT_NAME,
    FORMAT_VERSION,
    Checkpoint,
    load_checkpoint,
    load_model,
    save_model,
)

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "Checkpoint",
    "load_checkpoint",
    "load_model",
    "save_model",
]
