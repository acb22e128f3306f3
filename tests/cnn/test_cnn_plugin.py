"""The cnn plugin seen through the core's own loader: its entry point, the layers and course
modules it registers with the distribution and version, and blocking it."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import metadata

import pytest

import scidevnn_cnn
from scidevnn import plugins
from scidevnn.errors import UnknownLayerError
from scidevnn.plugins import Registry, make_plugin_manager
from scidevnn.testing import fresh_registry
from scidevnn_cnn import course

LAYERS = ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "AvgPool2d", "Dropout", "Dropout2d"]
COURSE = {
    "Conv2D": course.Conv2D,
    "BatchNorm2D": course.BatchNorm2D,
    "ReLU": course.ReLU,
    "MaxPooling": course.MaxPooling,
}


@pytest.fixture(autouse=True)
def _fresh_registry() -> Iterator[None]:
    with fresh_registry():
        yield


def test_entry_point_is_declared() -> None:
    points = {ep.name: ep for ep in metadata.entry_points(group="scidevnn")}
    assert points["cnn"].value == "scidevnn_cnn.plugin"
    assert points["cnn"].dist is not None and points["cnn"].dist.name == "scidevnn-cnn"


def test_layers_found_through_the_core_loader() -> None:
    version = metadata.version("scidevnn-cnn")
    listed = {info.name: info for info in plugins.list_layers()}
    for name in LAYERS:
        info = listed[name]
        assert info.cls is getattr(scidevnn_cnn, name)
        assert (info.distribution, info.version, info.plugin) == ("scidevnn-cnn", version, "cnn")
    assert plugins.get_layer("Conv2d") is scidevnn_cnn.Conv2d
    assert scidevnn_cnn.__version__ == version


def test_course_modules_found_through_the_core_loader() -> None:
    registry = Registry(make_plugin_manager())
    for name, cls in COURSE.items():
        assert registry.course_modules[name].cls is cls
        assert registry.course_modules[name].distribution == "scidevnn-cnn"
    from SciDevNN import SDmodules
    from SciDevNN.SDmodules import Conv2D

    assert Conv2D is course.Conv2D
    assert SDmodules.MaxPooling is course.MaxPooling


def test_blocked_plugin_is_named_in_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCIDEVNN_BLOCK_PLUGINS", "cnn")
    registry = Registry(make_plugin_manager())
    with pytest.raises(UnknownLayerError, match="scidevnn-cnn"):
        registry.get("Conv2d")
    assert "Linear" in registry.layers
