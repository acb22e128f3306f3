"""The installed version of mnist-cli."""

from __future__ import annotations

from importlib import metadata

try:
    APP_VERSION = metadata.version("mnist-cli")
except metadata.PackageNotFoundError:  # running from a source tree
    APP_VERSION = "0.0.0"
