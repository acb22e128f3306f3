"""From stored digits to network input: the one normalisation every model here expects."""

from __future__ import annotations

import torch
from torch import Tensor

#: Mean and standard deviation of MNIST's training pixels (scaled to [0, 1]). Every model
#: mnist-cli trains sees ``(x / 255 - MEAN) / STD``; the values are stored in each checkpoint.
MEAN = 0.1307
STD = 0.3081
NORMALIZATION = (MEAN, STD)


def normalize(images: Tensor, normalization: tuple[float, float] = NORMALIZATION) -> Tensor:
    """uint8 ``(N, 28, 28)`` -> float32 ``(N, 1, 28, 28)``: ``(x / 255 - mean) / std``."""
    mean, std = normalization
    x = images.to(torch.float32).unsqueeze(1)
    return x.mul_(1.0 / (255.0 * std)).sub_(mean / std)
