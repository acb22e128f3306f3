"""Convolution by kernel rows: a horizontal unfold and kh batched matrix products.

The full column matrix of im2col (C*kh*kw rows) is kh times larger than the input it is built
from, and on a CPU whose cache it overflows, writing it and reading it back costs more than the
multiplications. This method unfolds horizontally only:

    U[n, (c, j), y, x] = x_pad[n, c, y, sw*x + dw*j]        (N, C*kw, Hp, Wo)

With a vertical stride of 1, kernel row i then reads the contiguous block of rows
``y + i*dh`` of U, so the output is kh accumulating products, one image per batch entry, written
straight into the (N, Co, Ho*Wo) output:

    Y[n] = bias + sum_i W_i @ U[n, :, i*dh : i*dh + Ho, :]    W_i = weight[:, :, i, :] (Co, C*kw)

and the weight gradient is, row by row, ``dW_i = sum_n G[n] @ U[n, :, rows of i]^T``.

The input gradient ("rows" method, horizontal stride 1) uses the output gradient on a *wide*
grid: Wp = Wo + (kw-1)*dw columns per row, zeros after the Wo real ones, and (kw-1)*dw zeros in
front. Read (kw-1-j')*dw elements early, that buffer is each channel shifted right by that many
columns (the zeros fill in, also across row ends), so kw matrix products give, for every kernel
row i, ``T[(c, i)] = sum_{o, j} weight[o, c, i, j] * g[o, :, :, x - j*dw]`` at every input
column x, and kh row-shifted additions of T give the padded input gradient.

Groups are batch entries too: (N*G) products of the group's (Co/G, C/G*kw) blocks.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scidevnn_cnn._im2col import ConvGeometry, add_rows
from scidevnn_cnn._workspace import Workspace


def unfold_rows(planes: Tensor, geo: ConvGeometry, out: Tensor) -> Tensor:
    """Copy the horizontal unfold U (N, C*kw, Hp*Wo) of the (C, N, Hp, Wp) padded input."""
    n, c, kw, hp, wo = geo.n, geo.c, geo.kw, geo.hp, geo.wo
    view = planes.as_strided((n, c, kw, hp, wo), (geo.plane, n * geo.plane, geo.dw, geo.wp, geo.sw))
    out.view(n, c, kw, hp, wo).copy_(view)
    return out


def _row_block(unfolded: Tensor, geo: ConvGeometry, i: int) -> Tensor:
    """Rows ``y + i*dh`` (y < Ho) of U, as (N*G-batched) (C*kw, Ho*Wo) matrices."""
    start = i * geo.dh * geo.wo
    return unfolded[..., start : start + geo.ho * geo.wo]


def _per_image(blocks: Tensor, n: int) -> Tensor:
    """(G, R, K) weight blocks as an (N*G, R, K) batch: a free expand when G is 1."""
    groups, rows, k = blocks.shape
    if groups == 1:
        return blocks.expand(n, rows, k)
    return blocks.unsqueeze(0).expand(n, groups, rows, k).reshape(n * groups, rows, k)


def forward(
    unfolded: Tensor, weight: Tensor, bias: Tensor | None, geo: ConvGeometry, groups: int
) -> Tensor:
    """The (N, Co, Ho, Wo) output from U (N, C*kw, Hp*Wo)."""
    n, co = geo.n, weight.shape[0]
    cg, kh, kw = weight.shape[1], geo.kh, geo.kw
    rows = co // groups
    # per kernel row i: the (G, Co/G, C/G*kw) blocks of W_i
    per_row = weight.view(groups, rows, cg, kh, kw).permute(3, 0, 1, 2, 4)
    per_row = per_row.reshape(kh, groups, rows, cg * kw)
    grouped = unfolded.view(n * groups, cg * kw, -1)
    y = unfolded.new_empty(n, co, geo.ho, geo.wo)
    out = y.view(n * groups, rows, geo.ho * geo.wo)
    for i in range(kh):
        block = _row_block(grouped, geo, i)
        weights = _per_image(per_row[i], n)
        if i > 0:
            out.baddbmm_(weights, block)
        elif bias is None:
            torch.bmm(weights, block, out=out)
        else:
            start = bias.view(groups, rows, 1)
            start = start if groups == 1 else _per_image(start, n)
            torch.baddbmm(start, weights, block, out=out)
    return y


def weight_grad(unfolded: Tensor, grad: Tensor, geo: ConvGeometry, groups: int) -> Tensor:
    """dL/dweight (Co, C/G, kh, kw) from U and the (N, Co, Ho, Wo) output gradient."""
    n, co = geo.n, grad.shape[1]
    batch, rows = n * groups, co // groups
    cgkw = unfolded.shape[1] // groups
    g = grad.reshape(batch, rows, geo.ho * geo.wo)
    grouped = unfolded.view(batch, cgkw, -1)
    per_row = grad.new_empty(geo.kh, groups, rows, cgkw)
    for i in range(geo.kh):
        products = torch.bmm(g, _row_block(grouped, geo, i).transpose(1, 2))
        torch.sum(products.view(n, groups, rows, cgkw), 0, out=per_row[i])
    # per_row[i, grp, o, (c, j)] -> weight[(grp, o), c, i, j]
    shaped = per_row.view(geo.kh, co, cgkw // geo.kw, geo.kw).permute(1, 2, 0, 3)
    return shaped.contiguous()


def input_grad(
    grad: Tensor, weight: Tensor, geo: ConvGeometry, groups: int, ws: Workspace
) -> Tensor:
    """The padded input gradient (C, N, Hp, Wp), a workspace tensor ("rows" method)."""
    n, co = geo.n, weight.shape[0]
    cg, kh, kw = weight.shape[1], geo.kh, geo.kw
    rows = co // groups
    head, length = geo.head, geo.wide_length
    # workspace tensor made zero; only the real (Co, N, Ho, Wo) part is ever written
    wide = ws.scratch("wide_grad", (head + co * length,), grad, tag=geo)
    wide[head:].view(co, n, geo.ho, geo.wp)[..., : geo.wo] = grad.transpose(0, 1)
    # flipped[j', grp, (c, i), o] = weight[(grp, o), c, i, kw-1-j']
    flipped = weight.view(groups, rows, cg, kh, kw).flip(-1).permute(4, 0, 2, 3, 1)
    flipped = flipped.reshape(kw, groups, cg * kh, rows)
    partial = ws.scratch("partial", (groups, cg * kh, length), grad)
    for j in range(kw):
        shifted = wide.as_strided((groups, rows, length), (rows * length, length, 1), j * geo.dw)
        if j == 0:
            torch.bmm(flipped[0], shifted, out=partial)
        else:
            partial.baddbmm_(flipped[j], shifted)
    padded = ws.scratch("grad_input", (geo.c, n, geo.hp, geo.wp), grad)
    return add_rows(partial.view(geo.c * kh, length), geo, padded)
