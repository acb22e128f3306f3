"""Argument helpers shared by the layers: ``int or pair`` arguments and input checks."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from scidevnn.errors import BackwardError

#: What the constructors accept where torch takes ``_size_2_t``: an int or a pair of ints.
IntOrPair = int | tuple[int, int] | Sequence[int]


def pair(value: IntOrPair, name: str, layer: str) -> tuple[int, int]:
    """``3 -> (3, 3)``, ``(2, 3) -> (2, 3)``; a list (from a JSON config) counts as a pair."""
    if isinstance(value, bool):
        raise TypeError(f"{layer}: {name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        return value, value
    items = tuple(value)
    if len(items) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        raise TypeError(f"{layer}: {name} must be an int or a pair of ints, got {value!r}")
    return items[0], items[1]


def as_batch(x: Tensor, layer: str, channels: int | None = None) -> tuple[Tensor, bool]:
    """(N, C, H, W) stays, (C, H, W) becomes (1, C, H, W); also says whether it was unbatched.

    Anything else, or the wrong number of channels, is a one-line ValueError naming the layer
    and the shape.
    """
    if x.dim() not in (3, 4):
        raise ValueError(
            f"{layer}: expected a 3-D (C, H, W) or 4-D (N, C, H, W) input, "
            f"got shape {tuple(x.shape)}"
        )
    unbatched = x.dim() == 3
    if channels is not None and x.shape[-3] != channels:
        raise ValueError(
            f"{layer}: expected an input with {channels} channels, got shape {tuple(x.shape)}"
        )
    return (x.unsqueeze(0) if unbatched else x), unbatched


def check_grad_shape(grad: Tensor, expected: tuple[int, ...], layer: str) -> None:
    """A gradient whose shape is not the forward output's is a one-line BackwardError."""
    if tuple(grad.shape) != expected:
        raise BackwardError(
            f"{layer}.backward: grad_output has shape {tuple(grad.shape)}, "
            f"the forward output had shape {expected}"
        )
