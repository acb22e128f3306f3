"""SciDevNN rnn plugin: Tanh, RNNCell, LSTMCell, GRUCell, RNN, LSTM, GRU and LastStep.

Every layer has a hand-written backward (backpropagation through time for the sequence
layers) and mirrors its ``torch.nn`` namesake: arguments, parameter names and shapes,
``state_dict`` keys and numerics. The core finds them through the ``scidevnn`` entry point.
"""

from importlib import metadata

from scidevnn_rnn.gru import GRU
from scidevnn_rnn.gru_cell import GRUCell
from scidevnn_rnn.last_step import LastStep
from scidevnn_rnn.lstm import LSTM
from scidevnn_rnn.lstm_cell import LSTMCell
from scidevnn_rnn.rnn import RNN
from scidevnn_rnn.rnn_base import RNNBase
from scidevnn_rnn.rnn_cell import RNNCell
from scidevnn_rnn.tanh import Tanh

try:
    __version__ = metadata.version("scidevnn-rnn")
except metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "GRUCell",
    "LSTMCell",
    "LastStep",
    "RNNBase",
    "RNNCell",
    "Tanh",
    "__version__",
]
