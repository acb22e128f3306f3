"""Convolution as matrix products over strided views of the input ("im2col") and its adjoint.

Layout. The padded input is copied once into a flat, channel-major buffer laid out as
(C, N, Hp, Wp). Row ``(c, i, j)`` of the column matrix (C*kh*kw, N*Ho*Wq) is then a strided
view of that buffer shifted by the kernel offset ``(i*dh, j*dw)``, and the convolution is one
matrix product ``weight (Co, C*kh*kw) @ columns``, whose (Co, N, Ho, Wq) result needs one copy
to become the (N, Co, Ho, Wo) output.

Wide grid. With a horizontal stride of 1 the output is computed on a grid Wq = Wp columns wide
instead of Wo = Wp - (kw-1)*dw: the last (kw-1)*dw columns of every output row are garbage that
is dropped, but each row of the column matrix becomes one contiguous run of the buffer, which
copies several times faster than Ho*N runs of Wo elements. The buffer gets a tail of
(kw-1)*dw zeros so the last run stays inside it.

Input gradient, two ways:
- ``fold``: the column gradient ``weight^T @ grad`` (C*kh*kw, L), slice-added into the padded
  input at each of the kh*kw kernel offsets (the adjoint of the strided view);
- ``rows`` (wide grid only): the horizontal half of that sum is done inside a matrix product,
  ``T[c, i] = sum_{o, j} w[o, c, i, j] g[o, :, :, x - j*dw]`` over a (Co*kw, L) view of the
  zero-padded output gradient, leaving kh row-shifted additions. It moves less memory whenever
  Co*kw + 3*C*kh < 3*C*kh*kw, the usual case.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

PaddingMode = Literal["zeros", "reflect", "replicate", "circular"]
Algorithm = Literal["wide-rows", "wide-fold", "strided"]


@dataclass(frozen=True)
class ConvGeometry:
    """Every size of one convolution call, computed once per input shape."""

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
    wide: bool
    rows: bool  # input gradient by the "rows" method (else "fold")

    @property
    def hp(self) -> int:
        return self.h + self.pt + self.pb

    @property
    def wp(self) -> int:
        return self.w + self.pl + self.pr

    @property
    def plane(self) -> int:
        return self.hp * self.wp

    @property
    def wq(self) -> int:
        """Columns computed per output row: Wp on the wide grid, else Wo."""
        return self.wp if self.wide else self.wo

    @property
    def length(self) -> int:
        """Columns of the column matrix: N*Ho*Wq."""
        return self.n * self.ho * self.wq

    @property
    def tail(self) -> int:
        """Zeros after the buffer so the wide runs of the last plane stay inside it."""
        return (self.kw - 1) * self.dw if self.wide else 0


def make_geometry(
    shape: tuple[int, int, int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    pads: tuple[int, int, int, int],
    out_channels: int,
    layer: str,
    algorithm: Algorithm | None = None,
) -> ConvGeometry:
    """Output size and method for an (N, C, H, W) input; ``pads`` is (top, bottom, left, right).

    ``algorithm`` forces a method (tests use it to cover all three); by default the wide grid is
    used when the horizontal stride is 1 and it at most doubles the columns, and the input
    gradient by rows when that moves less memory than folding.
    """
    n, c, h, w = shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    pt, pb, pl, pr = pads
    hp, wp = h + pt + pb, w + pl + pr
    span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    if hp < span_h or wp < span_w:
        raise ValueError(
            f"{layer}: padded input size per channel ({hp} x {wp}) is smaller than the "
            f"dilated kernel ({span_h} x {span_w}); input shape {shape}"
        )
    ho, wo = (hp - span_h) // sh + 1, (wp - span_w) // sw + 1
    if algorithm is None:
        wide = sw == 1 and wp <= 2 * wo
        rows = wide and out_channels * kw + 3 * c * kh < 3 * c * kh * kw
    else:
        if algorithm != "strided" and sw != 1:
            raise ValueError(f"{layer}: algorithm {algorithm!r} needs a horizontal stride of 1")
        wide = algorithm != "strided"
        rows = algorithm == "wide-rows"
    return ConvGeometry(n, c, h, w, kh, kw, sh, sw, dh, dw, pt, pb, pl, pr, ho, wo, wide, rows)


def pad_index(size: int, before: int, after: int, mode: PaddingMode, device: torch.device) -> Tensor:
    """Source index of every padded position along one axis for reflect/replicate/circular."""
    index = torch.arange(-before, size + after, device=device)
    if mode == "reflect":
        index = index.abs()
        index = torch.where(index >= size, 2 * (size - 1) - index, index)
    elif mode == "replicate":
        index = index.clamp(0, size - 1)
    else:
        index = index.remainder(size)
    return index


def check_padding_mode(geo: ConvGeometry, mode: PaddingMode, layer: str) -> None:
    """torch's limits: reflect needs pad < size, circular pad <= size."""
    for pad, size, axis in ((max(geo.pt, geo.pb), geo.h, "height"), (max(geo.pl, geo.pr), geo.w, "width")):
        if mode == "reflect" and pad >= size:
            raise ValueError(
                f"{layer}: reflect padding {pad} must be smaller than the input {axis} {size}"
            )
        if mode == "circular" and pad > size:
            raise ValueError(
                f"{layer}: circular padding {pad} must not exceed the input {axis} {size}"
            )


def pad_channel_major(x: Tensor, geo: ConvGeometry, mode: PaddingMode) -> Tensor:
    """Flat buffer of C*N*Hp*Wp + tail elements holding the padded input as (C, N, Hp, Wp)."""
    size = geo.c * geo.n * geo.plane
    padded = geo.pt or geo.pb or geo.pl or geo.pr
    if padded and mode == "zeros":
        buffer = x.new_zeros(size + geo.tail)
    else:
        buffer = x.new_empty(size + geo.tail)
        buffer[size:].zero_()
    planes = buffer[:size].view(geo.c, geo.n, geo.hp, geo.wp)
    source = x.transpose(0, 1)
    if padded and mode != "zeros":
        rows = pad_index(geo.h, geo.pt, geo.pb, mode, x.device)
        cols = pad_index(geo.w, geo.pl, geo.pr, mode, x.device)
        planes.copy_(source.index_select(2, rows).index_select(3, cols))
    else:
        planes[:, :, geo.pt : geo.pt + geo.h, geo.pl : geo.pl + geo.w] = source
    return buffer


def unfold(buffer: Tensor, geo: ConvGeometry) -> Tensor:
    """The column matrix (C*kh*kw, N*Ho*Wq), rows ordered (c, i, j), columns (n, y, x)."""
    view = buffer.as_strided(
        (geo.c, geo.kh, geo.kw, geo.n, geo.ho, geo.wq),
        (geo.n * geo.plane, geo.dh * geo.wp, geo.dw, geo.plane, geo.sh * geo.wp, geo.sw),
    )
    return view.reshape(geo.c * geo.kh * geo.kw, geo.length)


def spread_grad(grad: Tensor, geo: ConvGeometry) -> tuple[Tensor, Tensor]:
    """The output gradient as the (Co, N*Ho*Wq) matrix, zero in the wide grid's garbage columns.

    Returns ``(matrix, buffer)``; on the wide grid ``buffer`` is the flat storage with a head of
    (kw-1)*dw zeros before the matrix, which the "rows" method reads shifted to the left.
    """
    co = grad.shape[1]
    if not geo.wide:
        matrix = grad.transpose(0, 1).reshape(co, geo.length)
        return matrix, matrix
    head = (geo.kw - 1) * geo.dw
    buffer = grad.new_empty(head + co * geo.length)
    buffer[:head].zero_()
    grid = buffer[head:].view(co, geo.n, geo.ho, geo.wp)
    grid[..., geo.wo :].zero_()
    grid[..., : geo.wo] = grad.transpose(0, 1)
    return buffer[head:].view(co, geo.length), buffer


def shifted_grad(buffer: Tensor, geo: ConvGeometry, out_channels: int) -> Tensor:
    """(Co*kw, L) matrix whose row (o, j') is the gradient of channel o shifted right by
    (kw-1-j')*dw columns (the "rows" method; ``buffer`` from :func:`spread_grad`)."""
    view = buffer.as_strided((out_channels, geo.kw, geo.length), (geo.length, geo.dw, 1))
    return view.reshape(out_channels * geo.kw, geo.length)


def add_rows(partial: Tensor, geo: ConvGeometry) -> Tensor:
    """Padded input gradient (flat, as (C, N, Hp, Wp)) from the (C*kh, L) partial sums."""
    out = partial.new_zeros(geo.c * geo.n * geo.plane)
    parts = partial.view(geo.c, geo.kh, geo.n, geo.ho, geo.wp)
    shape = (geo.c, geo.n, geo.ho, geo.wp)
    strides = (geo.n * geo.plane, geo.plane, geo.sh * geo.wp, 1)
    for i in range(geo.kh):
        out.as_strided(shape, strides, i * geo.dh * geo.wp).add_(parts[:, i])
    return out


def fold(columns: Tensor, geo: ConvGeometry) -> Tensor:
    """Adjoint of :func:`unfold`: padded input gradient (flat, as (C, N, Hp, Wp) + tail)."""
    out = columns.new_zeros(geo.c * geo.n * geo.plane + geo.tail)
    parts = columns.view(geo.c, geo.kh, geo.kw, geo.n, geo.ho, geo.wq)
    shape = (geo.c, geo.n, geo.ho, geo.wq)
    strides = (geo.n * geo.plane, geo.plane, geo.sh * geo.wp, geo.sw)
    for i in range(geo.kh):
        for j in range(geo.kw):
            out.as_strided(shape, strides, i * geo.dh * geo.wp + j * geo.dw).add_(parts[:, i, j])
    return out


def unpad(buffer: Tensor, geo: ConvGeometry, mode: PaddingMode) -> Tensor:
    """(N, C, H, W) input gradient from the flat padded one: crop, or for reflect/replicate/
    circular padding add each border position back onto the input position it copied."""
    planes = buffer[: geo.c * geo.n * geo.plane].view(geo.c, geo.n, geo.hp, geo.wp)
    if mode == "zeros" or not (geo.pt or geo.pb or geo.pl or geo.pr):
        inner = planes[:, :, geo.pt : geo.pt + geo.h, geo.pl : geo.pl + geo.w]
        return inner.transpose(0, 1).contiguous()
    rows = pad_index(geo.h, geo.pt, geo.pb, mode, buffer.device)
    cols = pad_index(geo.w, geo.pl, geo.pr, mode, buffer.device)
    narrow = planes.new_zeros(geo.c, geo.n, geo.hp, geo.w).index_add_(3, cols, planes)
    inner = planes.new_zeros(geo.c, geo.n, geo.h, geo.w).index_add_(2, rows, narrow)
    return inner.transpose(0, 1).contiguous()
