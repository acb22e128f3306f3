"""Plugin discovery and the layer registry.

Plugins are found through the ``scidevnn`` entry-point group with pluggy. Each registers layer
classes through the ``register_layers`` hook; the registry remembers which distribution (and
version) provided each name, refuses two plugins claiming one name, and answers a lookup miss
with the package to install.

``SCIDEVNN_BLOCK_PLUGINS`` (comma-separated entry-point names) skips plugins;
``SCIDEVNN_LOAD_PLUGINS`` (comma-separated) loads only those, ``""`` loads none.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pluggy

from scidevnn import hookspecs
from scidevnn.errors import PluginConflictError, UnknownLayerError

#: Layers that live in the project's own plugin packages, for "install X" hints.
KNOWN_PROVIDERS: dict[str, str] = {
    **dict.fromkeys(
        [
            "Conv2d",
            "BatchNorm2d",
            "SyncBatchNorm",
            "ReLU",
            "MaxPool2d",
            "AvgPool2d",
            "Dropout",
            "Dropout2d",
        ],
        "scidevnn-cnn",
    ),
    **dict.fromkeys(
        ["Tanh", "RNNCell", "LSTMCell", "GRUCell", "RNN", "LSTM", "GRU", "LastStep"],
        "scidevnn-rnn",
    ),
}

CORE_DISTRIBUTION = "scidevnn-core"

#: Distribution name -> the error that stopped it from loading (filled at discovery).
BROKEN_PLUGINS: dict[str, str] = {}


@dataclass(frozen=True)
class LayerInfo:
    """A registered layer: its name, class and the distribution that provides it."""

    name: str
    cls: type[Any]
    distribution: str
    version: str
    plugin: str


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"


class Registry:
    """Name -> class tables filled by the plugins' hooks."""

    def __init__(self, plugin_manager: pluggy.PluginManager) -> None:
        self.plugin_manager = plugin_manager
        self.layers: dict[str, LayerInfo] = {}
        self.course_modules: dict[str, LayerInfo] = {}
        distributions = {
            id(plugin): (dist.project_name, dist.version)
            for plugin, dist in plugin_manager.list_plugin_distinfo()
        }
        for hook_name, table in (
            ("register_layers", self.layers),
            ("register_course_modules", self.course_modules),
        ):
            for impl in getattr(plugin_manager.hook, hook_name).get_hookimpls():
                # plugins registered in-process (not through an entry point) have no
                # distribution, except the core's own built-in plugin
                builtin = impl.plugin_name == CORE_DISTRIBUTION
                dist, version = distributions.get(
                    id(impl.plugin),
                    (CORE_DISTRIBUTION, _version(CORE_DISTRIBUTION))
                    if builtin
                    else ("unknown", "unknown"),
                )
                impl.function(register=self._registrar(table, impl.plugin_name, dist, version))

    @staticmethod
    def _registrar(
        table: dict[str, LayerInfo], plugin_name: str, dist: str, version: str
    ) -> hookspecs.RegisterFn:
        """The ``register`` callback handed to one plugin's hook: refuses duplicate names."""

        def register(cls: type[Any], name: str | None = None) -> None:
            key = name or cls.__name__
            if key in table:
                other = table[key]
                raise PluginConflictError(
                    f"layer name '{key}' is registered twice: by {other.distribution} "
                    f"(plugin '{other.plugin}') and by {dist} (plugin '{plugin_name}'); "
                    "uninstall one of them or block it with SCIDEVNN_BLOCK_PLUGINS"
                )
            table[key] = LayerInfo(key, cls, dist, version, plugin_name)

        return register

    def get(self, name: str) -> type[Any]:
        """The layer class registered as ``name``; an unknown name says what to install."""
        info = self.layers.get(name)
        if info is None:
            raise UnknownLayerError(missing_message(name, self.layers))
        return info.cls

    def info(self, name: str) -> LayerInfo:
        self.get(name)
        return self.layers[name]


def missing_message(name: str, table: dict[str, LayerInfo], provider: str | None = None) -> str:
    """'unknown layer X; install Y' or 'unknown layer X; available: ...'.

    ``provider`` (e.g. the distribution a model file names) is used when ``name`` is not one
    of the project's own plugin layers.
    """
    provider = KNOWN_PROVIDERS.get(name, provider)
    if provider is not None and provider in BROKEN_PLUGINS:
        return (
            f"unknown layer type '{name}': its plugin package {provider} is installed but "
            f"failed to load ({BROKEN_PLUGINS[provider]})"
        )
    if provider is not None and _version(provider) != "unknown":
        return (
            f"unknown layer type '{name}': its plugin package {provider} is installed but not "
            "loaded (check SCIDEVNN_BLOCK_PLUGINS and SCIDEVNN_LOAD_PLUGINS)"
        )
    if provider is not None:
        return (
            f"unknown layer type '{name}': it is provided by the plugin package {provider}, "
            f"which is not installed (pip install {provider})"
        )
    available = ", ".join(sorted(table)) or "none"
    return f"unknown layer type '{name}'; available layers: {available}"


def _env_list(variable: str) -> set[str] | None:
    value = os.environ.get(variable)
    if value is None:
        return None
    return {item.strip() for item in value.split(",") if item.strip()}


def make_plugin_manager(load_entry_points: bool = True) -> pluggy.PluginManager:
    """A plugin manager with the built-in layers and (optionally) every installed plugin."""
    from scidevnn import builtin_plugin

    manager = pluggy.PluginManager("scidevnn")
    manager.add_hookspecs(hookspecs)
    manager.register(builtin_plugin, name="scidevnn-core")
    if not load_entry_points:
        return manager
    blocked = _env_list("SCIDEVNN_BLOCK_PLUGINS") or set()
    allowed = _env_list("SCIDEVNN_LOAD_PLUGINS")
    entry_points = list(metadata.entry_points(group="scidevnn"))
    for entry_point in entry_points:
        if entry_point.name in blocked or (allowed is not None and entry_point.name not in allowed):
            manager.set_blocked(entry_point.name)
    unknown = (blocked | (allowed or set())) - {entry_point.name for entry_point in entry_points}
    if unknown:
        warnings.warn(
            f"SCIDEVNN_BLOCK_PLUGINS / SCIDEVNN_LOAD_PLUGINS name no installed plugin: "
            f"{', '.join(sorted(unknown))} (installed: "
            f"{', '.join(sorted(ep.name for ep in entry_points)) or 'none'})",
            RuntimeWarning,
            stacklevel=2,
        )
    BROKEN_PLUGINS.clear()
    while True:
        try:
            manager.load_setuptools_entrypoints("scidevnn")
            return manager
        except Exception:  # a plugin that fails to import must not take the others down
            failures = 0
            for entry_point in entry_points:
                if manager.get_plugin(entry_point.name) or manager.is_blocked(entry_point.name):
                    continue
                try:
                    entry_point.load()
                except Exception as error:
                    failures += 1
                    dist = entry_point.dist.name if entry_point.dist else entry_point.name
                    BROKEN_PLUGINS[dist] = f"{type(error).__name__}: {error}"
                    manager.set_blocked(entry_point.name)
                    warnings.warn(
                        f"SciDevNN plugin {dist} failed to load and is skipped: "
                        f"{BROKEN_PLUGINS[dist]}",
                        RuntimeWarning,
                        stacklevel=2,
                    )
            if failures == 0:
                raise


_registry: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, built on first use."""
    global _registry
    if _registry is None:
        _registry = Registry(make_plugin_manager())
    return _registry


def reset_registry(registry: Registry | None = None) -> None:
    """Replace (or drop, to rebuild on next use) the process-wide registry; for tests."""
    global _registry
    _registry = registry


def get_layer(name: str) -> type[Any]:
    """Look a layer class up by name in every installed plugin."""
    return get_registry().get(name)


def list_layers() -> list[LayerInfo]:
    """Every registered layer with the distribution and version that provides it."""
    return sorted(get_registry().layers.values(), key=lambda info: (info.distribution, info.name))
