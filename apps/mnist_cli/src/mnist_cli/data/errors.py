"""The one error the data layer raises on purpose."""

from __future__ import annotations

from scidevnn.errors import SciDevNNError


class DataError(SciDevNNError):
    """Data that cannot be read: a one-line message naming the file or folder and the problem."""
