"""Convolution as matrix products over strided views of the input ("im2col") and its adjoint;
the geometry shared with the kernel-row methods of ``_rows`` (preferred wherever the strides
allow them: they move less memory), for which this module is the general fallback.

Layout. The padded input is copied once into a flat, channel-major buffer laid out as
(C, N, Hp, Wp). Row ``(c, i, j)`` of the column matrix (C*kh*kw, N*Ho*Wo) is a strided view of
that buffer shifted by the kernel offset ``(i*dh, j*dw)``, copied once; the convolution is then
one matrix product ``weight (Co, C*kh*kw) @ columns`` whose (Co, N, Ho*Wo) result needs one
cheap copy to become the (N, Co, Ho, Wo) output, and the weight gradient is one product
``columns @ grad^T`` with the long N*Ho*Wo dimension inside.

Input gradient ("fold", the general method): the column gradient ``weight^T @ grad``
(C*kh*kw, N*Ho*Wo), slice-added into the padded input at each of the kh*kw kernel offsets
(the adjoint of the strided view). ``add_rows`` serves the "rows" method of ``_rows``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from scidevnn_cnn._workspace import Workspace

PaddingMode = Literal["zeros", "reflect", "replicate", "circular"]
#: How the output and the weight gradient are computed: by kernel rows (``_rows``, vertical
#: stride 1) or from the full column matrix (this module).
ForwardMethod = Literal["rows", "columns"]
#: How the input gradient is computed: "rows" (``_rows``, horizontal stride 1) or "fold".
GradMethod = Literal["rows", "fold"]


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
    rows_forward: bool  # output and weight gradient by kernel rows (else by columns)
    rows: bool  # input gradient by the "rows" method (else "fold")
    two_stage: bool  # unfold through the horizontal unfold (see unfold)

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
    def length(self) -> int:
        """Columns of the column matrix: N*Ho*Wo."""
        return self.n * self.ho * self.wo

    @property
    def wide_length(self) -> int:
        """Columns of the "rows" method's matrices: N*Ho*Wp."""
        return self.n * self.ho * self.wp

    @property
    def head(self) -> int:
        """Zeros before the wide gradient, read by its most shifted rows."""
        return (self.kw - 1) * self.dw


def make_geometry(
    shape: tuple[int, int, int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    pads: tuple[int, int, int, int],
    layer: str,
    forward_method: ForwardMethod | None = None,
    grad_method: GradMethod | None = None,
) -> ConvGeometry:
    """Output size and methods for an (N, C, H, W) input; ``pads`` is (top, bottom, left, right).

    By default the "rows" methods wherever the strides allow them (they move the least
    memory); ``forward_method`` and ``grad_method`` force one (tests use them to cover all).
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
    if forward_method == "rows" and sh != 1:
        raise ValueError(f"{layer}: the 'rows' forward method needs a vertical stride of 1")
    if grad_method == "rows" and sw != 1:
        raise ValueError(f"{layer}: the 'rows' gradient method needs a horizontal stride of 1")
    rows_forward = sh == 1 if forward_method is None else forward_method == "rows"
    rows = sw == 1 if grad_method is None else grad_method == "rows"
    two_stage = sh == 1 and kh > 1 and wo <= 16
    return ConvGeometry(
        n, c, h, w, kh, kw, sh, sw, dh, dw, pt, pb, pl, pr, ho, wo, rows_forward, rows, two_stage
    )


def pad_index(
    size: int, before: int, after: int, mode: PaddingMode, device: torch.device
) -> Tensor:
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
    for pad, size, axis in (
        (max(geo.pt, geo.pb), geo.h, "height"),
        (max(geo.pl, geo.pr), geo.w, "width"),
    ):
        if mode == "reflect" and pad >= size:
            raise ValueError(
                f"{layer}: reflect padding {pad} must be smaller than the input {axis} {size}"
            )
        if mode == "circular" and pad > size:
            raise ValueError(
                f"{layer}: circular padding {pad} must not exceed the input {axis} {size}"
            )


def pad_channel_major(x: Tensor, geo: ConvGeometry, mode: PaddingMode, ws: Workspace) -> Tensor:
    """The padded input as a (C, N, Hp, Wp) workspace tensor.

    Only the interior is written (all of it for reflect/replicate/circular), so the zero border
    the tensor was made with stays zero.
    """
    planes = ws.scratch("input", (geo.c, geo.n, geo.hp, geo.wp), x, tag=geo)
    source = x.transpose(0, 1)
    if mode != "zeros" and (geo.pt or geo.pb or geo.pl or geo.pr):
        rows = pad_index(geo.h, geo.pt, geo.pb, mode, x.device)
        cols = pad_index(geo.w, geo.pl, geo.pr, mode, x.device)
        planes.copy_(source.index_select(2, rows).index_select(3, cols))
    else:
        planes[:, :, geo.pt : geo.pt + geo.h, geo.pl : geo.pl + geo.w] = source
    return planes


def unfold(planes: Tensor, geo: ConvGeometry, out: Tensor, ws: Workspace) -> Tensor:
    """Copy the column matrix (C*kh*kw, N*Ho*Wo) into ``out``: rows (c, i, j), columns (n, y, x).

    A copy straight from the padded input moves runs of Wo elements, slow when Wo is small.
    With a vertical stride of 1 and narrow outputs it goes through the horizontal unfold
    (C, kw, N, Hp, Wo) instead (kh times smaller), in which each kernel row's block of Ho
    output rows is one contiguous run of Ho*Wo elements.
    """
    c, n, kh, kw = geo.c, geo.n, geo.kh, geo.kw
    if geo.two_stage:
        hp, wo = geo.hp, geo.wo
        across = ws.scratch("unfold_x", (c, kw, n, hp, wo), planes)
        across.copy_(
            planes.as_strided(
                (c, kw, n, hp, wo), (n * geo.plane, geo.dw, geo.plane, geo.wp, geo.sw)
            )
        )
        block = geo.ho * wo
        view = across.as_strided(
            (c, kh, kw, n, block), (kw * n * hp * wo, geo.dh * wo, n * hp * wo, hp * wo, 1)
        )
        out.view(c, kh, kw, n, block).copy_(view)
        return out
    shape = (c, kh, kw, n, geo.ho, geo.wo)
    view = planes.as_strided(
        shape, (n * geo.plane, geo.dh * geo.wp, geo.dw, geo.plane, geo.sh * geo.wp, geo.sw)
    )
    out.view(shape).copy_(view)
    return out


def grad_matrix(grad: Tensor, ws: Workspace) -> Tensor:
    """The (N, Co, Ho, Wo) output gradient as the (Co, N*Ho*Wo) matrix (a workspace tensor)."""
    n, co = grad.shape[0], grad.shape[1]
    matrix = ws.scratch("grad", (co, n, grad.shape[2] * grad.shape[3]), grad)
    matrix.copy_(grad.reshape(n, co, -1).transpose(0, 1))
    return matrix.view(co, -1)


def add_rows(partial: Tensor, geo: ConvGeometry, out: Tensor) -> Tensor:
    """Padded input gradient ``out`` (C, N, Hp, Wp) from the "rows" method's (C*kh, N*Ho*Wp)
    partial sums: kernel row i adds its part i*dh rows lower."""
    out.zero_()
    parts = partial.view(geo.c, geo.kh, geo.n, geo.ho, geo.wp)
    shape = (geo.c, geo.n, geo.ho, geo.wp)
    strides = (geo.n * geo.plane, geo.plane, geo.sh * geo.wp, 1)
    for i in range(geo.kh):
        out.as_strided(shape, strides, i * geo.dh * geo.wp).add_(parts[:, i])
    return out


def fold(columns: Tensor, geo: ConvGeometry, out: Tensor) -> Tensor:
    """Adjoint of :func:`unfold`: padded input gradient ``out`` (C, N, Hp, Wp) from the column
    gradient; positions no window reached stay 0."""
    out.zero_()
    parts = columns.view(geo.c, geo.kh, geo.kw, geo.n, geo.ho, geo.wo)
    shape = (geo.c, geo.n, geo.ho, geo.wo)
    strides = (geo.n * geo.plane, geo.plane, geo.sh * geo.wp, geo.sw)
    for i in range(geo.kh):
        for j in range(geo.kw):
            out.as_strided(shape, strides, i * geo.dh * geo.wp + j * geo.dw).add_(parts[:, i, j])
    return out


def unpad(planes: Tensor, geo: ConvGeometry, mode: PaddingMode) -> Tensor:
    """(N, C, H, W) input gradient (a new tensor) from the padded (C, N, Hp, Wp) one: crop, or
    for reflect/replicate/circular padding add each border position back onto the input
    position it copied."""
    if mode == "zeros" or not (geo.pt or geo.pb or geo.pl or geo.pr):
        inner = planes[:, :, geo.pt : geo.pt + geo.h, geo.pl : geo.pl + geo.w]
    else:
        rows = pad_index(geo.h, geo.pt, geo.pb, mode, planes.device)
        cols = pad_index(geo.w, geo.pl, geo.pr, mode, planes.device)
        narrow = planes.new_zeros(geo.c, geo.n, geo.hp, geo.w).index_add_(3, cols, planes)
        inner = planes.new_zeros(geo.c, geo.n, geo.h, geo.w).index_add_(2, rows, narrow)
    out = inner.new_empty(geo.n, geo.c, geo.h, geo.w)
    out.copy_(inner.transpose(0, 1))
    return out
