"""SciDevNN: neural networks whose every layer has a hand-written forward and backward pass.

Built on ``torch.Tensor`` arithmetic alone: no autograd, no ``torch.nn``. Layers mirror their
``torch.nn`` namesakes (arguments, parameter names, ``state_dict`` keys, numerics).
"""

from __future__ import annotations

from importlib import metadata

from scidevnn.errors import (
    BackwardError,
    ModelFileError,
    PluginConflictError,
    SciDevNNError,
    StateDictError,
    UnknownLayerError,
)
from scidevnn.hookspecs import hookimpl
from scidevnn.layers.activation import LogSoftmax, Sigmoid, Softmax
from scidevnn.layers.container import Sequential
from scidevnn.layers.linear import Linear
from scidevnn.layers.reshape import Flatten, Identity
from scidevnn.losses.cross_entropy import CrossEntropyLoss
from scidevnn.losses.loss import Loss
from scidevnn.losses.mse import MSELoss
from scidevnn.module import Module, is_grad_enabled, no_grad
from scidevnn.optim.adam import Adam, AdamW
from scidevnn.optim.optimizer import Optimizer
from scidevnn.optim.sgd import SGD
from scidevnn.parameter import Parameter
from scidevnn.plugins import get_layer, list_layers
from scidevnn.storage import Checkpoint, load_checkpoint, load_model, save_model

try:
    __version__ = metadata.version("scidevnn-core")
except metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "SGD",
    "Adam",
    "AdamW",
    "BackwardError",
    "Checkpoint",
    "CrossEntropyLoss",
    "Flatten",
    "Identity",
    "Linear",
    "LogSoftmax",
    "Loss",
    "MSELoss",
    "ModelFileError",
    "Module",
    "Optimizer",
    "Parameter",
    "PluginConflictError",
    "SciDevNNError",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "StateDictError",
    "UnknownLayerError",
    "__version__",
    "get_layer",
    "hookimpl",
    "is_grad_enabled",
    "list_layers",
    "load_checkpoint",
    "load_model",
    "no_grad",
    "save_model",
]
