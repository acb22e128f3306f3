"""Workspace: large scratch tensors a layer keeps from one call to the next.

A convolution's column matrix and its other temporaries are megabytes each. Allocated afresh at
every call, blocks that large come from (and go back to) the operating system, and every step
pays thousands of page faults for memory it used a moment ago. A workspace keeps them instead.

- ``scratch(name, shape, like, tag)``: a tensor used only during one call; the same tensor comes
  back at the next call with that shape and tag, *with its old contents*. A newly made one is
  zero-filled, so a region the caller never writes (the zero border of a padded copy) stays
  zero for good; the tag (e.g. the call's geometry) says which regions those are.
- ``take(name, shape, like)`` / ``give(name, tensor)``: a tensor that outlives the call (kept for
  backward); taken from a free list and given back once backward is done with it, so several
  forward calls pending backward each hold their own.

Only the most recent shape is kept per name: a new input size replaces the old tensors.

A workspace is a cache: pickled or deep-copied (a trained model handed back from a worker
process, say) it travels empty, and the copy allocates its own tensors at its first call.

Why a new tensor is allocated twice (CPU only): glibc's malloc serves blocks above its mmap
threshold (128 KiB at start) with fresh mappings, and raises that threshold to the size of the
largest such block freed. A workspace that never frees would leave it low, and every megabyte
activation of every training step would be page-faulted in anew (measured: over 1,000 faults
and about 2 ms per LeNet step). Freeing one block of the workspace's size once lets the
allocator adapt, as it does for a program that frees its large tensors itself.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor


def _fits(tensor: Tensor, shape: Sequence[int], like: Tensor) -> bool:
    return (
        tuple(tensor.shape) == tuple(shape)
        and tensor.dtype == like.dtype
        and tensor.device == like.device
    )


def _allocate(shape: Sequence[int], like: Tensor, zero: bool) -> Tensor:
    """A new tensor; on the CPU a first one of that size is freed at once (module docstring)."""
    if like.device.type == "cpu":
        like.new_empty(tuple(shape))
    return like.new_zeros(tuple(shape)) if zero else like.new_empty(tuple(shape))


class Workspace:
    """Scratch tensors by name (see the module docstring)."""

    def __init__(self) -> None:
        self._scratch: dict[str, tuple[Tensor, object]] = {}
        self._free: dict[str, list[Tensor]] = {}

    def scratch(self, name: str, shape: Sequence[int], like: Tensor, tag: object = None) -> Tensor:
        entry = self._scratch.get(name)
        if entry is not None and entry[1] == tag and _fits(entry[0], shape, like):
            return entry[0]
        tensor = _allocate(shape, like, zero=True)
        self._scratch[name] = (tensor, tag)
        return tensor

    def take(self, name: str, shape: Sequence[int], like: Tensor) -> Tensor:
        free = self._free.get(name, [])
        while free:
            tensor = free.pop()
            if _fits(tensor, shape, like):
                return tensor
        return _allocate(shape, like, zero=False)

    def give(self, name: str, tensor: Tensor) -> None:
        free = self._free.setdefault(name, [])
        if free and not _fits(free[0], tensor.shape, tensor):
            free.clear()
        free.append(tensor)

    def clear(self) -> None:
        self._scratch.clear()
        self._free.clear()

    def __reduce__(self) -> tuple[type[Workspace], tuple[()]]:
        return Workspace, ()  # a cache: a copy starts empty (module docstring)
