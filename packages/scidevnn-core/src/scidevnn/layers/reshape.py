"""STUB: Flatten, Identity (to be written)."""

from scidevnn.module import Module


class Flatten(Module):
    pass


class Identity(Module):
    pass
