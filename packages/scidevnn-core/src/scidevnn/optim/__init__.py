"""Optimizers mirroring torch.optim: SGD, Adam, AdamW over ``scidevnn.Parameter`` objects."""

from scidevnn.optim.adam import Adam, AdamW
from scidevnn.optim.optimizer import Optimizer
from scidevnn.optim.sgd import SGD

__all__ = ["SGD", "Adam", "AdamW", "Optimizer"]
