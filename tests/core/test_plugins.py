"""Plugin discovery and the layer registry, including a real throw-away plugin distribution
found through its entry point, saved to HDF5 and loaded back."""

from __future__ import annotations

import sys
import textwrap
import tomllib
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pluggy
import pytest
import torch

import scidevnn as sd
from scidevnn import hookspecs, plugins
from scidevnn.errors import MissingPluginError, PluginConflictError, UnknownLayerError
from scidevnn.hookspecs import RegisterFn, hookimpl
from scidevnn.module import Module
from scidevnn.plugins import Registry, make_plugin_manager
from scidevnn.storage import load_model, save_model
from scidevnn.testing import fresh_registry

CORE_LAYERS = ["Flatten", "Identity", "Linear", "LogSoftmax", "Sequential", "Sigmoid", "Softmax"]
PLUGIN = "scale-test"
DISTRIBUTION = "scidevnn-scale-test"


@pytest.fixture(autouse=True)
def _fresh_registry() -> Iterator[None]:
    """Every test starts from, and leaves behind, a registry rebuilt on next use."""
    with fresh_registry():
        yield


def core_only() -> Registry:
    return Registry(make_plugin_manager(load_entry_points=False))


# --------------------------------------------------------------------------- the registry
def test_builtin_layers_come_from_scidevnn_core() -> None:
    listed = {info.name: info for info in sd.list_layers()}
    version = metadata.version("scidevnn-core")
    for name in CORE_LAYERS:
        info = listed[name]
        assert (info.distribution, info.version, info.plugin) == (
            "scidevnn-core",
            version,
            "scidevnn-core",
        )
        assert sd.get_layer(name) is getattr(sd, name)
    assert isinstance(sd.get_layer("Linear")(3, 2), Module)


def test_unknown_layer_names_the_package_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    plugins.reset_registry(core_only())
    monkeypatch.setattr(metadata, "version", lambda name: "0.1.0")
    with pytest.raises(UnknownLayerError) as exc:
        sd.get_layer("Conv2d")
    assert str(exc.value) == (
        "unknown layer type 'Conv2d': its plugin package scidevnn-cnn is installed but not "
        "loaded (check SCIDEVNN_BLOCK_PLUGINS and SCIDEVNN_LOAD_PLUGINS)"
    )

    def not_installed(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    with pytest.raises(UnknownLayerError) as exc:
        sd.get_layer("Conv2d")
    assert str(exc.value) == (
        "unknown layer type 'Conv2d': it is provided by the plugin package scidevnn-cnn, "
        "which is not installed (pip install scidevnn-cnn)"
    )
    assert isinstance(exc.value, KeyError)
    with pytest.raises(UnknownLayerError, match="pip install scidevnn-rnn"):
        sd.get_layer("LSTMCell")
    with pytest.raises(UnknownLayerError) as exc:
        sd.get_layer("Linaer")
    assert str(exc.value) == (
        "unknown layer type 'Linaer'; available layers: " + ", ".join(CORE_LAYERS)
    )


class First:
    @hookimpl
    def register_layers(self, register: RegisterFn) -> None:
        register(sd.Linear, name="Dense")


class Second:
    @hookimpl
    def register_layers(self, register: RegisterFn) -> None:
        register(sd.Sigmoid, name="Dense")


class Shadow:
    @hookimpl
    def register_layers(self, register: RegisterFn) -> None:
        register(sd.Identity, name="Linear")


def manager_with(**extra: object) -> pluggy.PluginManager:
    manager = pluggy.PluginManager("scidevnn")
    manager.add_hookspecs(hookspecs)
    for name, plugin in extra.items():
        manager.register(plugin, name=name)
    return manager


def test_two_plugins_claiming_one_name_is_an_error() -> None:
    with pytest.raises(PluginConflictError) as exc:
        Registry(manager_with(first=First(), second=Second()))
    message = str(exc.value)
    assert "'Dense' is registered twice" in message
    assert "plugin 'first'" in message and "plugin 'second'" in message
    assert "SCIDEVNN_BLOCK_PLUGINS" in message


def test_a_plugin_cannot_shadow_a_core_layer() -> None:
    manager = make_plugin_manager(load_entry_points=False)
    manager.register(Shadow(), name="shadow")
    with pytest.raises(PluginConflictError, match=r"'Linear' is registered twice.*scidevnn-core"):
        Registry(manager)


def test_explicit_names_and_plugins_without_a_distribution() -> None:
    registry = Registry(manager_with(first=First()))
    assert registry.get("Dense") is sd.Linear
    info = registry.info("Dense")
    assert (info.name, info.plugin, info.distribution) == ("Dense", "first", "unknown")


# --------------------------------------------------------------------------- a real plugin package
PLUGIN_SOURCE = '''
"""A throw-away SciDevNN plugin: one layer with a parameter."""

import torch

from scidevnn import Module, Parameter, hookimpl


class Scale(Module):
    """y = x * weight; weight (size,) starts at ``factor``. Backward: dL/dw = sum(g * x)."""

    def __init__(self, size, factor=1.0, device=None, dtype=None):
        super().__init__()
        self.size = size
        self.weight = Parameter(torch.full((size,), float(factor), device=device, dtype=dtype))

    def forward(self, x):
        self.save_for_backward(x)
        return x * self.weight.data

    def backward(self, grad_output):
        (x,) = self.saved_tensors()
        self.weight.accumulate((grad_output * x).reshape(-1, self.size).sum(0))
        return grad_output * self.weight.data if self.needs_input_grad else None


@hookimpl
def register_layers(register):
    register(Scale)
'''

PYPROJECT = f"""
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{DISTRIBUTION}"
version = "0.3.1"
dependencies = ["scidevnn-core"]

[project.entry-points.scidevnn]
{PLUGIN} = "scidevnn_scale_test"
"""


def install_without_pip(project: Path) -> None:
    """Write the ``.dist-info`` an installer would, from the project's pyproject.toml."""
    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    dist_info = project / "src" / f"{meta['name'].replace('-', '_')}-{meta['version']}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {meta['version']}\n"
    )
    lines = []
    for group, entries in meta["entry-points"].items():
        lines.append(f"[{group}]")
        lines.extend(f"{name} = {target}" for name, target in entries.items())
    (dist_info / "entry_points.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture
def scale_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A plugin distribution in tmp_path, importable and visible to importlib.metadata."""
    project = tmp_path / DISTRIBUTION
    (project / "src" / "scidevnn_scale_test").mkdir(parents=True)
    (project / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT))
    (project / "src" / "scidevnn_scale_test" / "__init__.py").write_text(PLUGIN_SOURCE)
    install_without_pip(project)
    monkeypatch.syspath_prepend(str(project / "src"))
    monkeypatch.delenv("SCIDEVNN_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("SCIDEVNN_BLOCK_PLUGINS", raising=False)
    try:
        yield project
    finally:
        plugins.reset_registry(None)
        sys.modules.pop("scidevnn_scale_test", None)


def test_plugin_is_discovered_saved_and_loaded(scale_plugin: Path, tmp_path: Path) -> None:
    assert DISTRIBUTION in {dist.metadata["Name"] for dist in metadata.distributions()}
    info = {i.name: i for i in sd.list_layers()}["Scale"]
    assert (info.distribution, info.version, info.plugin) == (DISTRIBUTION, "0.3.1", PLUGIN)
    scale_cls = sd.get_layer("Scale")

    torch.manual_seed(0)
    first, scale = sd.Linear(4, 3), scale_cls(3, factor=0.5)
    scale.weight.data.uniform_(-2, 2)
    model = sd.Sequential(first, scale)
    path = tmp_path / "scaled.h5"
    save_model(model, path)
    loaded = load_model(path)
    assert isinstance(loaded, sd.Sequential)
    assert type(loaded[1]) is scale_cls
    assert loaded[1].get_config() == {"size": 3, "factor": 0.5}
    assert torch.equal(loaded.state_dict()["1.weight"], scale.weight.data)
    x = torch.randn(5, 4)
    linear = torch.nn.Linear(4, 3)
    assert first.bias is not None
    linear.load_state_dict({"weight": first.weight.data, "bias": first.bias.data})
    with torch.no_grad():
        expected = linear(x) * scale.weight.data
    torch.testing.assert_close(loaded(x), expected, atol=1e-6, rtol=1e-5)

    # without the plugin the file says which package it needs
    plugins.reset_registry(core_only())
    with pytest.raises(MissingPluginError) as exc:
        load_model(path)
    message = str(exc.value)
    assert "group '/model/1'" in message and "'Scale'" in message
    # installed (its metadata is on the path) but not in this registry: said as such
    assert f"{DISTRIBUTION} is installed but not loaded" in message


def test_block_and_allow_lists(scale_plugin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCIDEVNN_BLOCK_PLUGINS", f"other, {PLUGIN}")
    with pytest.warns(RuntimeWarning, match="name no installed plugin: other"):
        assert "Scale" not in plugins.get_registry().layers
    monkeypatch.delenv("SCIDEVNN_BLOCK_PLUGINS")

    monkeypatch.setenv("SCIDEVNN_LOAD_PLUGINS", "")
    plugins.reset_registry(None)
    assert sorted(plugins.get_registry().layers) == CORE_LAYERS  # the built-ins always load

    monkeypatch.setenv("SCIDEVNN_LOAD_PLUGINS", PLUGIN)
    plugins.reset_registry(None)
    assert sorted(plugins.get_registry().layers) == sorted([*CORE_LAYERS, "Scale"])
    assert plugins.get_registry().plugin_manager.has_plugin(PLUGIN)


def test_a_plugin_that_fails_to_import_does_not_take_the_others_down(
    scale_plugin: Path,
) -> None:
    module = scale_plugin / "src" / "scidevnn_scale_test" / "__init__.py"
    module.write_text("raise ImportError('needs libfoo')\n")
    with pytest.warns(RuntimeWarning, match=f"{DISTRIBUTION} failed to load"):
        registry = plugins.get_registry()
    assert "Linear" in registry.layers and "Scale" not in registry.layers
    assert plugins.BROKEN_PLUGINS == {DISTRIBUTION: "ImportError: needs libfoo"}
    message = plugins.missing_message("Scale", registry.layers, provider=DISTRIBUTION)
    assert f"{DISTRIBUTION} is installed but failed to load (ImportError: needs libfoo)" in message
