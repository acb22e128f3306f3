"""The rnn plugin seen through the core's own loader: its entry point, the layers and course
modules it registers, the distribution and version named for them, and blocking it."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import metadata

import pytest

import scidevnn_rnn
from scidevnn import plugins
from scidevnn.errors import UnknownLayerError
from scidevnn.plugins import Registry, make_plugin_manager
from scidevnn.testing import fresh_registry
from scidevnn_rnn import course

LAYERS = ["Tanh", "RNNCell", "LSTMCell", "GRUCell", "RNN", "LSTM", "GRU", "LastStep"]
COURSE = {"RNNCell": course.RNNCell, "LSTMCell": course.LSTMCell, "Tanh": course.Tanh}


@pytest.fixture(autouse=True)
def _fresh_registry() -> Iterator[None]:
    with fresh_registry():
        yield


def test_entry_point_is_declared() -> None:
    points = {ep.name: ep for ep in metadata.entry_points(group="scidevnn")}
    assert points["rnn"].value == "scidevnn_rnn.plugin"
    assert points["rnn"].dist is not None and points["rnn"].dist.name == "scidevnn-rnn"


def test_layers_found_through_the_core_loader() -> None:
    registry = Registry(make_plugin_manager())
    version = metadata.version("scidevnn-rnn")
    for name in LAYERS:
        info = registry.info(name)
        assert info.cls is getattr(scidevnn_rnn, name)
        assert (info.distribution, info.version, info.plugin) == ("scidevnn-rnn", version, "rnn")
    listed = {info.name for info in plugins.list_layers() if info.distribution == "scidevnn-rnn"}
    assert listed == set(LAYERS)
    assert plugins.get_layer("LSTM") is scidevnn_rnn.LSTM


def test_course_modules_found_through_the_core_loader() -> None:
    registry = Registry(make_plugin_manager())
    for name, cls in COURSE.items():
        assert registry.course_modules[name].cls is cls
        assert registry.course_modules[name].distribution == "scidevnn-rnn"
    from SciDevNN import SDmodules
    from SciDevNN.SDmodules import LSTMCell

    assert LSTMCell is course.LSTMCell
    assert SDmodules.RNNCell is course.RNNCell
    assert SDmodules.Tanh is course.Tanh


def test_blocked_plugin_says_what_provides_the_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCIDEVNN_BLOCK_PLUGINS", "rnn")
    plugins.reset_registry(None)
    with pytest.raises(UnknownLayerError, match="scidevnn-rnn"):
        plugins.get_layer("LSTM")
    with pytest.raises(UnknownLayerError, match="scidevnn-rnn"):
        plugins.get_layer("LastStep")
