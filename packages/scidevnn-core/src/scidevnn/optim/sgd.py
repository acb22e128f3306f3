"""STUB"""

from scidevnn.optim.optimizer import Optimizer


class SGD(Optimizer):
    pass
