"""STUB: Sigmoid, Softmax, LogSoftmax (to be written)."""

from scidevnn.module import Module


class Sigmoid(Module):
    pass


class Softmax(Module):
    pass


class LogSoftmax(Module):
    pass
