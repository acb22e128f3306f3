"""Every error SciDevNN raises on purpose, in one place, so callers can catch them by class."""

from __future__ import annotations


class SciDevNNError(Exception):
    """Base class of SciDevNN's own errors: a user mistake, said in one line."""


class BackwardError(SciDevNNError, RuntimeError):
    """A backward call with no forward waiting for it, or a gradient of the wrong shape."""


class StateDictError(SciDevNNError, RuntimeError):
    """``load_state_dict`` with missing or unexpected keys, or a shape that does not fit."""


class UnknownLayerError(SciDevNNError, KeyError):
    """A layer name no installed plugin provides."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class PluginConflictError(SciDevNNError):
    """Two plugins registered the same layer name."""


class ModelFileError(SciDevNNError):
    """A model file that cannot be read or written; the message names the file and group."""


class NotHDF5Error(ModelFileError):
    """The file is not HDF5 at all."""


class TruncatedFileError(ModelFileError):
    """The file is HDF5 but cut short or otherwise damaged."""


class FormatVersionError(ModelFileError):
    """The file was written by a newer (or unknown) format version."""


class MissingPluginError(ModelFileError):
    """The file needs a layer type that no installed plugin provides."""


class DatasetMismatchError(ModelFileError):
    """A parameter or buffer dataset is missing, extra, or of the wrong shape or dtype."""


class ModelFileNotFoundError(ModelFileError, FileNotFoundError):
    """There is no model file at the path given."""


class MalformedFileError(ModelFileError):
    """HDF5, but not laid out as a model: a missing attribute, a config that is not JSON..."""


class DistributedError(SciDevNNError, RuntimeError):
    """A data-parallel run failed: a peer worker died, never joined or stopped responding."""
