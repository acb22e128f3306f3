"""STUB"""

from scidevnn.losses.loss import Loss


class MSELoss(Loss):
    pass
