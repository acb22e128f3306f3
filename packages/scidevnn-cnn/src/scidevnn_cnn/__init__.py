"""SciDevNN cnn plugin: Conv2d, BatchNorm2d, ReLU, MaxPool2d, AvgPool2d, Dropout, Dropout2d.

Layers with hand-written backward passes that mirror their ``torch.nn`` namesakes; the core
finds them through the ``scidevnn`` entry point (``scidevnn_cnn.plugin``).
"""

from importlib import metadata

from scidevnn_cnn.batchnorm import BatchNorm2d
from scidevnn_cnn.conv2d import Conv2d
from scidevnn_cnn.dropout import Dropout, Dropout2d
from scidevnn_cnn.pooling import AvgPool2d, MaxPool2d
from scidevnn_cnn.relu import ReLU

try:
    __version__ = metadata.version("scidevnn-cnn")
except metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "AvgPool2d",
    "BatchNorm2d",
    "Conv2d",
    "Dropout",
    "Dropout2d",
    "MaxPool2d",
    "ReLU",
    "__version__",
]
