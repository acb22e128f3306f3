"""The hooks a SciDevNN plugin may implement.

A plugin is a module (found through the ``scidevnn`` entry-point group) with functions marked
``@scidevnn.hookimpl``. The core's own layers register through these very hooks.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

hookspec = pluggy.HookspecMarker("scidevnn")
hookimpl = pluggy.HookimplMarker("scidevnn")

#: ``register(cls, name=None)``: ``name`` defaults to ``cls.__name__``.
RegisterFn = Callable[..., None]


@hookspec
def register_layers(register: RegisterFn) -> None:
    """Register layer classes (``Module`` subclasses) by calling ``register(cls)``."""


@hookspec
def register_course_modules(register: RegisterFn) -> None:
    """Register classes of the course interface (``SciDevNN.SDmodules``) by name."""
