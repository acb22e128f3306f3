"""STUB"""

from scidevnn.module import Module


class Loss(Module):
    pass
