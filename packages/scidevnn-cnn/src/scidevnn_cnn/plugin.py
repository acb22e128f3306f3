"""Entry point of the plugin: registers its layers with the SciDevNN registry."""

from __future__ import annotations

from scidevnn.hookspecs import RegisterFn, hookimpl


@hookimpl
def register_layers(register: RegisterFn) -> None:
    """Layers of this plugin (none yet)."""
