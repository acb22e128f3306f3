"""Entry point of the plugin: registers its layers and course modules with SciDevNN."""

from __future__ import annotations

from scidevnn.hookspecs import RegisterFn, hookimpl
from scidevnn_rnn.gru import GRU
from scidevnn_rnn.gru_cell import GRUCell
from scidevnn_rnn.last_step import LastStep
from scidevnn_rnn.lstm import LSTM
from scidevnn_rnn.lstm_cell import LSTMCell
from scidevnn_rnn.rnn import RNN
from scidevnn_rnn.rnn_cell import RNNCell
from scidevnn_rnn.tanh import Tanh


@hookimpl
def register_layers(register: RegisterFn) -> None:
    """Tanh, RNNCell, LSTMCell, GRUCell, RNN, LSTM, GRU, LastStep."""
    for cls in (Tanh, RNNCell, LSTMCell, GRUCell, RNN, LSTM, GRU, LastStep):
        register(cls)


@hookimpl
def register_course_modules(register: RegisterFn) -> None:
    """``SciDevNN.SDmodules.RNNCell``, ``LSTMCell`` and ``Tanh``."""
    from scidevnn_rnn import course

    for cls in (course.RNNCell, course.LSTMCell, course.Tanh):
        register(cls)
