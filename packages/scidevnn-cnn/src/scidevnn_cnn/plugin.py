"""Entry point of the plugin: registers its layers with the SciDevNN registry."""

from __future__ import annotations

from scidevnn.hookspecs import RegisterFn, hookimpl
from scidevnn_cnn.batchnorm import BatchNorm2d
from scidevnn_cnn.conv2d import Conv2d
from scidevnn_cnn.dropout import Dropout, Dropout2d
from scidevnn_cnn.pooling import AvgPool2d, MaxPool2d
from scidevnn_cnn.relu import ReLU
from scidevnn_cnn.sync_batchnorm import SyncBatchNorm


@hookimpl
def register_layers(register: RegisterFn) -> None:
    """Conv2d, BatchNorm2d, ReLU, MaxPool2d, AvgPool2d, Dropout, Dropout2d."""
    for cls in (Conv2d, BatchNorm2d, ReLU, MaxPool2d, AvgPool2d, Dropout, Dropout2d):
        register(cls)
    register(SyncBatchNorm)  # data-parallel BatchNorm2d (scidevnn.distributed)


@hookimpl
def register_course_modules(register: RegisterFn) -> None:
    """The course interface's SDmodules.Conv2D, BatchNorm2D, ReLU, MaxPooling."""
    from scidevnn_cnn import course

    for cls in (course.Conv2D, course.BatchNorm2D, course.ReLU, course.MaxPooling):
        register(cls)
