"""The core's own layers, registered through the same hook as any external plugin."""

from __future__ import annotations

from scidevnn.hookspecs import RegisterFn, hookimpl
from scidevnn.layers.activation import LogSoftmax, Sigmoid, Softmax
from scidevnn.layers.container import Sequential
from scidevnn.layers.linear import Linear
from scidevnn.layers.reshape import Flatten, Identity


@hookimpl
def register_layers(register: RegisterFn) -> None:
    """Sequential, Linear, Sigmoid, Softmax, LogSoftmax, Flatten, Identity."""
    for cls in (Sequential, Linear, Sigmoid, Softmax, LogSoftmax, Flatten, Identity):
        register(cls)


@hookimpl
def register_course_modules(register: RegisterFn) -> None:
    """The course interface's core modules (``SciDevNN.SDmodules``)."""
    from SciDevNN import course_core

    for cls in (
        course_core.Linear,
        course_core.Softmax,
        course_core.Sigmoid,
        course_core.MSE,
        course_core.CrossEntropy,
    ):
        register(cls)
