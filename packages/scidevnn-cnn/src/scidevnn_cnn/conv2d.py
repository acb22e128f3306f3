"""Conv2d: 2-D cross-correlation as one matrix product over a strided view of the input."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from scidevnn.module import Module, is_grad_enabled
from scidevnn.parameter import Parameter
from scidevnn_cnn import _im2col
from scidevnn_cnn._args import IntOrPair, as_batch, check_grad_shape, pair
from scidevnn_cnn._im2col import Algorithm, ConvGeometry, PaddingMode
from scidevnn_cnn._workspace import Workspace

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


class Conv2d(Module):
    """2-D cross-correlation: at output channel o and position (y, x), ``bias[o] +
    sum_{c in group(o), i, j} weight[o, c, i, j] * x_pad[c, sh*y + dh*i, sw*x + dw*j]``.

    Arguments, defaults, attributes and ``state_dict`` keys are ``torch.nn.Conv2d``'s:
    ``kernel_size``, ``stride``, ``dilation`` an int or a pair; ``padding`` an int, a pair,
    ``'valid'`` (none) or ``'same'`` (output as large as the input, stride 1 only, any odd
    total put at the bottom/right as torch does); ``groups`` divides both channel counts;
    ``padding_mode`` one of ``'zeros'``, ``'reflect'``, ``'replicate'``, ``'circular'`` (all four
    supported, forward and backward).

    Shapes: x (N, C_in, H, W) or unbatched (C_in, H, W) -> y (N, C_out, Ho, Wo) with
    ``Ho = (H + pt + pb - dh*(kh-1) - 1) // sh + 1`` (likewise Wo); the output is contiguous.
    ``weight`` (C_out, C_in/groups, kh, kw), ``bias`` (C_out,). Initialised like torch
    (kaiming-uniform with a = sqrt(5) for the weight, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the
    bias, drawn in that order), so the same seed gives torch's weights.

    Forward: the padded input, as columns X (C_in*kh*kw, N*Ho*Wo) (see ``_im2col``), gives
    Y = W X + b with W the weight as (C_out, C_in*kh*kw) (per group).
    Backward, with G = dL/dY as (C_out, N*Ho*Wo): dL/dW = G X^T, dL/db = row sums of G,
    dL/dX = W^T G folded back onto the input (positions no window reached get 0; the border
    gradient of reflect/replicate/circular padding is added to the position it copied). The
    input gradient is skipped when ``needs_input_grad`` is False.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrPair,
        stride: IntOrPair = 1,
        padding: IntOrPair | str = 0,
        dilation: IntOrPair = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if groups <= 0:
            raise ValueError(f"{name}: groups must be a positive integer, got {groups}")
        if in_channels % groups != 0:
            raise ValueError(
                f"{name}: in_channels ({in_channels}) must be divisible by groups ({groups})"
            )
        if out_channels % groups != 0:
            raise ValueError(
                f"{name}: out_channels ({out_channels}) must be divisible by groups ({groups})"
            )
        if padding_mode not in _PADDING_MODES:
            raise ValueError(
                f"{name}: padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = pair(kernel_size, "kernel_size", name)
        self.stride = pair(stride, "stride", name)
        self.dilation = pair(dilation, "dilation", name)
        self.groups = groups
        self.padding_mode: PaddingMode = padding_mode  # type: ignore[assignment]
        if any(v <= 0 for v in (*self.kernel_size, *self.stride, *self.dilation)):
            raise ValueError(f"{name}: kernel_size, stride and dilation must be positive")
        self.padding: tuple[int, int] | str
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(
                    f"{name}: invalid padding string {padding!r}, "
                    "should be one of ('valid', 'same')"
                )
            if padding == "same" and self.stride != (1, 1):
                raise ValueError(
                    f"{name}: padding='same' is not supported for strided convolutions"
                )
            self.padding = padding
        else:
            self.padding = pair(padding, "padding", name)
            if min(self.padding) < 0:
                raise ValueError(f"{name}: padding must be non-negative, got {padding!r}")
        self._pads = self._explicit_pads()
        #: Forces the im2col method ("wide-rows", "wide-fold", "strided"); None picks the
        #: fastest. For tests and benchmarks only: every method gives the same numbers.
        self.algorithm: Algorithm | None = None
        self._geometry: dict[tuple[Any, ...], ConvGeometry] = {}
        self._workspace = Workspace()

        kh, kw = self.kernel_size
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        weight = torch.empty(out_channels, in_channels // groups, kh, kw, **factory)
        fan_in = (in_channels // groups) * kh * kw
        if weight.numel() > 0:
            # torch.nn.init.kaiming_uniform_(a=sqrt(5)), computed the same way, bit for bit.
            gain = math.sqrt(2.0 / (1 + math.sqrt(5) ** 2))
            bound = math.sqrt(3.0) * (gain / math.sqrt(fan_in))
            weight.uniform_(-bound, bound)
        self.weight = Parameter(weight)
        self.bias: Parameter | None
        if bias:
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            self.bias = Parameter(torch.empty(out_channels, **factory).uniform_(-bound, bound))
        else:
            self.register_parameter("bias", None)

    def _explicit_pads(self) -> tuple[int, int, int, int]:
        """(top, bottom, left, right); 'same' puts an odd total's extra row/column last."""
        if not isinstance(self.padding, str):
            ph, pw = self.padding
            return ph, ph, pw, pw
        if self.padding == "valid":
            return 0, 0, 0, 0
        pads: list[int] = []
        for d, k in zip(self.dilation, self.kernel_size, strict=True):
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
        return pads[0], pads[1], pads[2], pads[3]

    def _plan(self, x: Tensor) -> ConvGeometry:
        n, c, h, w = x.shape
        key = (n, h, w, self.algorithm)
        geo = self._geometry.get(key)
        if geo is None:
            geo = _im2col.make_geometry(
                (n, c, h, w), self.kernel_size, self.stride, self.dilation, self._pads,
                self.out_channels, type(self).__name__, self.algorithm,
            )
            if self.padding_mode != "zeros":
                _im2col.check_padding_mode(geo, self.padding_mode, type(self).__name__)
            self._geometry[key] = geo
        return geo

    def forward(self, x: Tensor) -> Tensor:
        x4, unbatched = as_batch(x, type(self).__name__, self.in_channels)
        if x4.dtype != self.weight.data.dtype:
            raise TypeError(
                f"{type(self).__name__}: input dtype {x4.dtype} does not match the weight "
                f"dtype {self.weight.data.dtype}"
            )
        geo = self._plan(x4)
        ws, g, co = self._workspace, self.groups, self.out_channels
        planes = _im2col.pad_channel_major(x4, geo, self.padding_mode, ws)
        k = geo.c * geo.kh * geo.kw
        columns = _im2col.unfold(planes, geo, ws.take("columns", (k, geo.length), x4), ws)
        out = ws.scratch("output", (co, geo.length), x4)
        weight = self.weight.data.reshape(g, co // g, -1)
        if g == 1:
            if self.bias is None:
                torch.mm(weight[0], columns, out=out)
            else:
                torch.addmm(self.bias.data.unsqueeze(1), weight[0], columns, out=out)
        else:
            grouped, out_g = columns.view(g, -1, geo.length), out.view(g, co // g, geo.length)
            if self.bias is None:
                torch.bmm(weight, grouped, out=out_g)
            else:
                torch.baddbmm(self.bias.data.view(g, co // g, 1), weight, grouped, out=out_g)
        y = x4.new_empty(geo.n, co, geo.ho, geo.wo)
        y.view(geo.n, co, -1).copy_(out.view(co, geo.n, -1).transpose(0, 1))
        if is_grad_enabled():
            self.save_for_backward(columns, geo, unbatched)
        else:
            ws.give("columns", columns)
        return y.squeeze(0) if unbatched else y

    def backward(self, grad_output: Tensor) -> Tensor | None:
        columns, geo, unbatched = self.saved_tensors()
        grad = grad_output.unsqueeze(0) if unbatched else grad_output
        check_grad_shape(grad, (geo.n, self.out_channels, geo.ho, geo.wo), type(self).__name__)
        ws, g, co = self._workspace, self.groups, self.out_channels
        matrix = _im2col.grad_matrix(grad, ws)
        if self.bias is not None:
            self.bias.accumulate(matrix.sum(1))
        # columns @ grad^T, then transposed: faster than grad @ columns^T for these shapes
        if g == 1:
            grad_weight = torch.mm(columns, matrix.t()).t()
        else:
            grad_weight = torch.bmm(
                columns.view(g, -1, geo.length), matrix.view(g, co // g, geo.length).transpose(1, 2)
            ).transpose(1, 2)
        self.weight.accumulate(grad_weight.reshape(self.weight.data.shape).contiguous())
        ws.give("columns", columns)
        if not self.needs_input_grad:
            return None
        weight = self.weight.data
        padded = ws.scratch("grad_input", (geo.c, geo.n, geo.hp, geo.wp), grad)
        if geo.rows:
            cg, kh, kw = weight.shape[1], geo.kh, geo.kw
            # flipped[grp, (c, i), (o, j')] = weight[o, c, i, kw-1-j'] within each group
            flipped = (
                weight.view(g, co // g, cg, kh, kw)
                .flip(-1)
                .permute(0, 2, 3, 1, 4)
                .reshape(g, cg * kh, co // g * kw)
            )
            shifted = _im2col.shifted_grad(grad, geo, ws).view(g, co // g * kw, geo.wide_length)
            partial = ws.scratch("partial", (geo.c * kh, geo.wide_length), grad)
            if g == 1:
                torch.mm(flipped[0], shifted[0], out=partial)
            else:
                torch.bmm(flipped, shifted, out=partial.view(g, cg * kh, geo.wide_length))
            _im2col.add_rows(partial, geo, padded)
        else:
            w_t = weight.reshape(g, co // g, -1).transpose(1, 2)
            grouped = matrix.view(g, co // g, geo.length)
            grad_columns = ws.scratch("grad_columns", (geo.c * geo.kh * geo.kw, geo.length), grad)
            if g == 1:
                torch.mm(w_t[0], grouped[0], out=grad_columns)
            else:
                torch.bmm(w_t, grouped, out=grad_columns.view(g, -1, geo.length))
            _im2col.fold(grad_columns, geo, padded)
        grad_input = _im2col.unpad(padded, geo, self.padding_mode)
        return grad_input.squeeze(0) if unbatched else grad_input

    def extra_repr(self) -> str:
        text = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}"
        )
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        if self.padding_mode != "zeros":
            text += f", padding_mode={self.padding_mode}"
        return text
