"""The course's modules: ``SDmodules.Linear``, ``Softmax``, ``Sigmoid``, ``MSE``, ``CrossEntropy``.

Course classes provided by plugins (``Conv2D``, ``BatchNorm2D``, ``ReLU``, ``MaxPooling`` from
scidevnn-cnn; ``RNNCell``, ``LSTMCell``, ``Tanh`` from scidevnn-rnn) are found on first access
in the registry that the plugins' ``register_course_modules`` hooks fill, so
``SDmodules.Conv2D`` and ``from SciDevNN.SDmodules import Conv2D`` work once the plugin is
installed, without the core importing it.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from SciDevNN.course_core import MSE, CrossEntropy, Linear, Sigmoid, Softmax
from scidevnn.plugins import get_registry

__all__ = ["MSE", "CrossEntropy", "Linear", "Sigmoid", "Softmax"]

#: Course classes of the project's own plugin packages, for "install X" hints.
KNOWN_COURSE_PROVIDERS: dict[str, str] = {
    **dict.fromkeys(["Conv2D", "BatchNorm2D", "ReLU", "MaxPooling"], "scidevnn-cnn"),
    **dict.fromkeys(["RNNCell", "LSTMCell", "Tanh"], "scidevnn-rnn"),
}


def __getattr__(name: str) -> Any:
    """A course class registered by a plugin; a known one whose plugin is absent says so."""
    if name.startswith("_"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    registry = get_registry()
    info = registry.course_modules.get(name)
    if info is not None:
        return info.cls
    provider = KNOWN_COURSE_PROVIDERS.get(name)
    if provider is not None:
        # ImportError rather than AttributeError: `from SciDevNN.SDmodules import Conv2D`
        # would replace an AttributeError by a generic "cannot import name" and lose the hint
        raise ImportError(_missing_provider_message(name, provider), name=__name__)
    available = ", ".join(sorted(registry.course_modules)) or "none"
    raise AttributeError(
        f"SciDevNN.SDmodules has no course module {name!r}; available: {available}"
    )


def __dir__() -> list[str]:
    return sorted(set(__all__) | set(get_registry().course_modules))


def _missing_provider_message(name: str, provider: str) -> str:
    try:
        version = metadata.version(provider)
    except metadata.PackageNotFoundError:
        return (
            f"SciDevNN.SDmodules.{name} is provided by the plugin package {provider}, "
            f"which is not installed (pip install {provider})"
        )
    return (
        f"SciDevNN.SDmodules.{name} is provided by the plugin package {provider}, but the "
        f"installed {provider} {version} does not register it (an older version, or the "
        "plugin is blocked by SCIDEVNN_BLOCK_PLUGINS / SCIDEVNN_LOAD_PLUGINS)"
    )
