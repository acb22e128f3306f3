"""MaxPool2d and AvgPool2d: a reduction over the kh*kw strided views of the input, one per
kernel offset (elementwise operations on whole tensors; no loop over pixels or images)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from scidevnn.module import Module
from scidevnn_cnn._args import IntOrPair, as_batch, check_grad_shape, pair

#: Input shapes whose geometry a layer remembers (then it starts over).
_CACHE_SIZE = 32


@dataclass(frozen=True)
class PoolGeometry:
    """Sizes of one pooling call. ``pt, pb, pl, pr`` pad the input so every window, including
    ceil_mode's partial last ones, lies inside the padded array."""

    n: int
    c: int
    h: int
    w: int
    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    pt: int
    pb: int
    pl: int
    pr: int
    ho: int
    wo: int
    cache: dict[str, Tensor] = field(default_factory=dict, compare=False, hash=False)

    @property
    def padded(self) -> bool:
        return bool(self.pt or self.pb or self.pl or self.pr)

    @property
    def overlapping(self) -> bool:
        return self.sh < (self.kh - 1) * self.dh + 1 or self.sw < (self.kw - 1) * self.dw + 1


def _output_size(size: int, k: int, pad: int, stride: int, dilation: int, ceil: bool) -> int:
    """torch's pooling_output_shape: a ceil_mode window must start inside input or left pad."""
    span = size + 2 * pad - dilation * (k - 1) - 1 + (stride - 1 if ceil else 0)
    out = span // stride + 1
    if ceil and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def make_pool_geometry(
    shape: tuple[int, ...],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    ceil_mode: bool,
    layer: str,
) -> PoolGeometry:
    n, c, h, w = shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    ho = _output_size(h, kh, ph, sh, dh, ceil_mode)
    wo = _output_size(w, kw, pw, sw, dw, ceil_mode)
    if ho < 1 or wo < 1:
        raise ValueError(
            f"{layer}: input of shape {tuple(shape)} is too small: output size would be "
            f"({ho} x {wo})"
        )
    pb = max(0, (ho - 1) * sh + (kh - 1) * dh + 1 - ph - h)
    pr = max(0, (wo - 1) * sw + (kw - 1) * dw + 1 - pw - w)
    return PoolGeometry(n, c, h, w, kh, kw, sh, sw, dh, dw, ph, pb, pw, pr, ho, wo)


def _check_padding(kernel: tuple[int, int], padding: tuple[int, int], layer: str) -> None:
    """torch's rule (checked at construction here, at the first call in torch)."""
    for k, p in zip(kernel, padding, strict=True):
        if p < 0 or p > k // 2:
            raise ValueError(
                f"{layer}: padding should be at most half of the kernel size, "
                f"got padding={padding}, kernel_size={kernel}"
            )


def _pad(x: Tensor, geo: PoolGeometry, fill: float) -> Tensor:
    """``x`` itself, or a copy framed by ``fill`` wide enough for every window."""
    if not geo.padded:
        return x
    padded = x.new_full((geo.n, geo.c, geo.h + geo.pt + geo.pb, geo.w + geo.pl + geo.pr), fill)
    padded[:, :, geo.pt : geo.pt + geo.h, geo.pl : geo.pl + geo.w] = x
    return padded


def _views(source: Tensor, geo: PoolGeometry) -> list[Tensor]:
    """The kh*kw strided (N, C, Ho, Wo) views of a padded array, one per kernel offset, in the
    scan order of a window: row by row, each left to right."""
    s_n, s_c, s_h, s_w = source.stride()
    shape = (geo.n, geo.c, geo.ho, geo.wo)
    strides = (s_n, s_c, s_h * geo.sh, s_w * geo.sw)
    base = source.storage_offset()
    return [
        source.as_strided(shape, strides, base + i * geo.dh * s_h + j * geo.dw * s_w)
        for i in range(geo.kh)
        for j in range(geo.kw)
    ]


class MaxPool2d(Module):
    """``y[n, c, oy, ox] = max over the window of x_pad`` (padding counts as -inf).

    Arguments and defaults are ``torch.nn.MaxPool2d``'s (``stride`` defaults to
    ``kernel_size``; padding at most half the dilated kernel). Shapes: x (N, C, H, W) or
    (C, H, W) -> y (N, C, Ho, Wo), Ho = floor or ceil((H + 2p - d(k-1) - 1) / s) + 1, where
    ceil_mode drops a last window that would start in the bottom/right padding, as torch does.
    With ``return_indices`` also returns the flat index (row * W + column) of each maximum in
    its input plane, torch's indices.

    The maximum is the first one in the window's scan order (rows top to bottom, each left to
    right), like torch's kernel, so ties send the gradient where torch does. (Inputs with NaN:
    the value is NaN as in torch, but the index may point to a different element.)
    Backward: dL/dx[index] += dL/dy for every output; overlapping windows accumulate.
    """

    def __init__(
        self,
        kernel_size: IntOrPair,
        stride: IntOrPair | None = None,
        padding: IntOrPair = 0,
        dilation: IntOrPair = 1,
        return_indices: bool = False,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.dilation = dilation
        self.return_indices = return_indices
        self.ceil_mode = ceil_mode
        self._kernel = pair(kernel_size, "kernel_size", name)
        self._stride = pair(self.stride, "stride", name)
        self._padding = pair(padding, "padding", name)
        self._dilation = pair(dilation, "dilation", name)
        if min(*self._kernel, *self._stride, *self._dilation) <= 0:
            raise ValueError(f"{name}: kernel_size, stride and dilation must be positive")
        _check_padding(self._kernel, self._padding, name)
        self._geometry: dict[tuple[int | str, ...], PoolGeometry] = {}

    def _plan(self, x: Tensor) -> PoolGeometry:
        key = (*x.shape, str(x.device))  # the geometry caches index tensors on the device
        geo = self._geometry.get(key)
        if geo is None:
            if len(self._geometry) >= _CACHE_SIZE:
                self._geometry.clear()
            geo = make_pool_geometry(
                tuple(x.shape),
                self._kernel,
                self._stride,
                self._padding,
                self._dilation,
                self.ceil_mode,
                type(self).__name__,
            )
            self._geometry[key] = geo
        return geo

    def _tables(self, geo: PoolGeometry, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """Per geometry: flat index of every window's (0, 0) corner (Ho, Wo), the flat offset of
        each scan position (kh*kw,), and the scan position of each window's first real element."""
        if "corner" not in geo.cache:
            rows = torch.arange(geo.ho, device=device) * geo.sh - geo.pt
            cols = torch.arange(geo.wo, device=device) * geo.sw - geo.pl
            geo.cache["corner"] = rows.view(-1, 1) * geo.w + cols
            i = torch.arange(geo.kh, device=device).view(-1, 1)
            j = torch.arange(geo.kw, device=device)
            geo.cache["offset"] = (i * geo.dh * geo.w + j * geo.dw).reshape(-1)
            # first real row/column of each window: skip the padding in steps of the dilation
            first_i = (-rows).clamp(min=0).add(geo.dh - 1).div(geo.dh, rounding_mode="floor")
            first_j = (-cols).clamp(min=0).add(geo.dw - 1).div(geo.dw, rounding_mode="floor")
            # a dilated window can straddle a small input without touching it: its output is
            # -inf and its gradient goes nowhere (torch writes it out of bounds)
            empty_rows = (first_i >= geo.kh) | (rows + first_i * geo.dh >= geo.h)
            empty_cols = (first_j >= geo.kw) | (cols + first_j * geo.dw >= geo.w)
            empty = empty_rows.view(-1, 1) | empty_cols
            if bool(empty.any()):
                geo.cache["empty"] = empty
            first_i, first_j = first_i.clamp(max=geo.kh - 1), first_j.clamp(max=geo.kw - 1)
            geo.cache["first"] = first_i.view(-1, 1) * geo.kw + first_j
        return geo.cache["corner"], geo.cache["offset"], geo.cache["first"]

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        x4, unbatched = as_batch(x, type(self).__name__)
        geo = self._plan(x4)
        _, _, first = self._tables(geo, x4.device)
        views = _views(_pad(x4, geo, float("-inf")), geo)
        # scan position of the running maximum, in the smallest integer type that holds it
        # (elementwise uint8 arithmetic is several times faster than int64)
        small = torch.uint8 if len(views) <= 256 else torch.int32
        out = views[0]
        position = first.to(small).expand(out.shape) if geo.padded else None
        for t in range(1, len(views)):
            candidate = views[t]
            greater = candidate > out
            out = torch.maximum(out, candidate)
            # positions only grow along the scan: the last strict improvement is a maximum
            step = greater.view(torch.uint8) * t if small == torch.uint8 else greater.to(small) * t
            position = step if position is None else torch.maximum(position, step)
        if len(views) == 1:
            out = out.clone()
        if position is None:
            position = torch.zeros(out.shape, dtype=small, device=out.device)
        self.save_for_backward(position, geo, unbatched)
        if not self.return_indices:
            return out.squeeze(0) if unbatched else out
        indices = self._flat_indices(position, geo)
        return (out.squeeze(0), indices.squeeze(0)) if unbatched else (out, indices)

    def _flat_indices(self, position: Tensor, geo: PoolGeometry) -> Tensor:
        """Index (row * W + column) in the input plane of each window's scan ``position``."""
        corner, offset, _ = self._tables(geo, position.device)
        return torch.take(offset, position.long()).add_(corner)

    def backward(self, grad_output: Tensor) -> Tensor | None:
        position, geo, unbatched = self.saved_tensors()
        grad = grad_output.unsqueeze(0) if unbatched else grad_output
        check_grad_shape(grad, (geo.n, geo.c, geo.ho, geo.wo), type(self).__name__)
        if not self.needs_input_grad:
            return None
        indices = self._flat_indices(position, geo)
        empty = geo.cache.get("empty")
        if empty is not None:
            grad = grad.masked_fill(empty, 0.0)
            indices = indices.clamp(0, geo.h * geo.w - 1)
        flat = grad.new_zeros(geo.n, geo.c, geo.h * geo.w)
        flat.scatter_add_(2, indices.reshape(geo.n, geo.c, -1), grad.reshape(geo.n, geo.c, -1))
        grad_input = flat.view(geo.n, geo.c, geo.h, geo.w)
        return grad_input.squeeze(0) if unbatched else grad_input

    def extra_repr(self) -> str:
        return (
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, ceil_mode={self.ceil_mode}"
        )


class AvgPool2d(Module):
    """``y[n, c, oy, ox] = sum over the window of x_pad / divisor`` (zero padding).

    Arguments and defaults are ``torch.nn.AvgPool2d``'s. The divisor, as in torch: the window
    size clipped to the padded input when ``count_include_pad`` (ceil_mode's partial windows
    count only their part inside input + padding), else the number of input elements it
    covers; ``divisor_override`` replaces both. Shapes as MaxPool2d (no dilation).
    Backward: every input element of a window receives dL/dy / divisor; overlapping windows
    accumulate.
    """

    def __init__(
        self,
        kernel_size: IntOrPair,
        stride: IntOrPair | None = None,
        padding: IntOrPair = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad
        self.divisor_override = divisor_override
        self._kernel = pair(kernel_size, "kernel_size", name)
        self._stride = pair(self.stride, "stride", name)
        self._padding = pair(padding, "padding", name)
        if min(*self._kernel, *self._stride) <= 0:
            raise ValueError(f"{name}: kernel_size and stride must be positive")
        if divisor_override is not None and divisor_override == 0:
            raise ValueError(f"{name}: divisor_override must be non-zero")
        _check_padding(self._kernel, self._padding, name)
        self._geometry: dict[tuple[int | str, ...], PoolGeometry] = {}

    def _plan(self, x: Tensor) -> PoolGeometry:
        key = (*x.shape, str(x.device))  # the geometry caches index tensors on the device
        geo = self._geometry.get(key)
        if geo is None:
            if len(self._geometry) >= _CACHE_SIZE:
                self._geometry.clear()
            geo = make_pool_geometry(
                tuple(x.shape),
                self._kernel,
                self._stride,
                self._padding,
                (1, 1),
                self.ceil_mode,
                type(self).__name__,
            )
            self._geometry[key] = geo
        return geo

    def _divisor(self, geo: PoolGeometry, x: Tensor) -> Tensor | float:
        """torch's divide_factor: a number, or an (Ho, Wo) tensor when it varies."""
        if self.divisor_override is not None:
            return float(self.divisor_override)
        key = f"divisor-{x.dtype}"
        if key not in geo.cache:
            counts: list[Tensor] = []
            for out, size, k, s, pad in (
                (geo.ho, geo.h, geo.kh, geo.sh, geo.pt),
                (geo.wo, geo.w, geo.kw, geo.sw, geo.pl),
            ):
                start = torch.arange(out, device=x.device) * s - pad
                end = (start + k).clamp(max=size + pad)
                if not self.count_include_pad:
                    start, end = start.clamp(min=0), end.clamp(max=size)
                counts.append(end - start)
            geo.cache[key] = (counts[0].view(-1, 1) * counts[1]).to(x.dtype)
        divisor = geo.cache[key]
        first = float(divisor.view(-1)[0])
        return first if bool((divisor == first).all()) else divisor

    def forward(self, x: Tensor) -> Tensor:
        x4, unbatched = as_batch(x, type(self).__name__)
        geo = self._plan(x4)
        views = _views(_pad(x4, geo, 0.0), geo)
        total = views[0].clone() if len(views) == 1 else views[0] + views[1]
        for view in views[2:]:
            total += view
        divisor = self._divisor(geo, x4)
        out = total / divisor
        self.save_for_backward(geo, divisor, unbatched)
        return out.squeeze(0) if unbatched else out

    def backward(self, grad_output: Tensor) -> Tensor | None:
        geo, divisor, unbatched = self.saved_tensors()
        grad = grad_output.unsqueeze(0) if unbatched else grad_output
        check_grad_shape(grad, (geo.n, geo.c, geo.ho, geo.wo), type(self).__name__)
        if not self.needs_input_grad:
            return None
        share = grad / divisor
        hp, wp = geo.h + geo.pt + geo.pb, geo.w + geo.pl + geo.pr
        padded = grad.new_zeros(geo.n, geo.c, hp, wp)
        for view in _views(padded, geo):
            view += share
        grad_input = padded[:, :, geo.pt : geo.pt + geo.h, geo.pl : geo.pl + geo.w]
        if geo.padded:
            grad_input = grad_input.contiguous()
        return grad_input.squeeze(0) if unbatched else grad_input

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
