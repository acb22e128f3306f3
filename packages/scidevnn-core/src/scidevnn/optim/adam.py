"""STUB"""

from scidevnn.optim.optimizer import Optimizer


class Adam(Optimizer):
    pass


class AdamW(Adam):
    pass
