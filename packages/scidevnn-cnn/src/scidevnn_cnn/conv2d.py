"""Conv2d: 2-D cross-correlation as one matrix product over a strided view of the input."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from scidevnn.module import Module, is_grad_enabled
from scidevnn.parameter import Parameter
from scidevnn_cnn import _im2col, _rows
from scidevnn_cnn._args import IntOrPair, as_batch, check_grad_shape, pair
from scidevnn_cnn._im2col import ConvGeometry, ForwardMethod, GradMethod, PaddingMode
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

    The maths, with X the column matrix of the padded input (C_in*kh*kw, N*Ho*Wo), W the
    weight as (C_out, C_in*kh*kw) (per group) and G = dL/dY as (C_out, N*Ho*Wo):
    Y = W X + b, dL/dW = G X^T, dL/db = row sums of G, dL/dX = W^T G folded back onto the input
    (positions no window reached get 0; the border gradient of reflect/replicate/circular
    padding is added to the position it copied). The input gradient is skipped when
    ``needs_input_grad`` is False.

    How it is computed: all matrix products over strided views, no loop over pixels or images.
    With stride 1 along an axis, by kernel rows (``_rows``: a horizontal unfold kh times
    smaller than X and kh batched products; the input gradient by kw products over a shifted
    view of the output gradient); otherwise from X itself (``_im2col``). Large temporaries are
    kept between calls (``_workspace``).
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
        #: Force the method of the forward pass and weight gradient ("rows", "columns") or of
        #: the input gradient ("rows", "fold"); None picks the fastest the strides allow.
        #: For tests and benchmarks only: every method gives the same numbers.
        self.forward_method: ForwardMethod | None = None
        self.grad_method: GradMethod | None = None
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
        key = (n, h, w, self.forward_method, self.grad_method)
        geo = self._geometry.get(key)
        if geo is None:
            if len(self._geometry) >= 32:  # input shapes remembered, then start over
                self._geometry.clear()
            geo = _im2col.make_geometry(
                (n, c, h, w),
                self.kernel_size,
                self.stride,
                self.dilation,
                self._pads,
                type(self).__name__,
                self.forward_method,
                self.grad_method,
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
        ws = self._workspace
        planes = _im2col.pad_channel_major(x4, geo, self.padding_mode, ws)
        bias = None if self.bias is None else self.bias.data
        shape: tuple[int, ...]
        if geo.rows_forward:
            name = "unfolded"
            shape = (geo.n, geo.c * geo.kw, geo.hp * geo.wo)
            kept = _rows.unfold_rows(planes, geo, ws.take(name, shape, x4))
            y = _rows.forward(kept, self.weight.data, bias, geo, self.groups)
        else:
            name = "columns"
            shape = (geo.c * geo.kh * geo.kw, geo.length)
            kept = _im2col.unfold(planes, geo, ws.take(name, shape, x4), ws)
            y = self._forward_columns(kept, bias, geo)
        if is_grad_enabled():
            self.save_for_backward(name, kept, geo, unbatched)
        else:
            ws.give(name, kept)
        return y.squeeze(0) if unbatched else y

    def _forward_columns(self, columns: Tensor, bias: Tensor | None, geo: ConvGeometry) -> Tensor:
        """Y = W X + b from the column matrix X, as a new (N, Co, Ho, Wo) tensor."""
        g, co = self.groups, self.out_channels
        out = self._workspace.scratch("output", (co, geo.length), columns)
        weight = self.weight.data.reshape(g, co // g, -1)
        if g == 1:
            if bias is None:
                torch.mm(weight[0], columns, out=out)
            else:
                torch.addmm(bias.unsqueeze(1), weight[0], columns, out=out)
        else:
            grouped, out_g = columns.view(g, -1, geo.length), out.view(g, co // g, geo.length)
            if bias is None:
                torch.bmm(weight, grouped, out=out_g)
            else:
                torch.baddbmm(bias.view(g, co // g, 1), weight, grouped, out=out_g)
        y = columns.new_empty(geo.n, co, geo.ho, geo.wo)
        y.view(geo.n, co, -1).copy_(out.view(co, geo.n, -1).transpose(0, 1))
        return y

    def backward(self, grad_output: Tensor) -> Tensor | None:
        name, kept, geo, unbatched = self.saved_tensors()
        grad = grad_output.unsqueeze(0) if unbatched else grad_output
        check_grad_shape(grad, (geo.n, self.out_channels, geo.ho, geo.wo), type(self).__name__)
        ws, g = self._workspace, self.groups
        matrix = None
        if geo.rows_forward:
            if self.bias is not None:
                self.bias.accumulate(grad.sum((0, 2, 3)))
            grad_weight = _rows.weight_grad(kept, grad, geo, g)
        else:
            matrix = _im2col.grad_matrix(grad, ws)
            if self.bias is not None:
                self.bias.accumulate(matrix.sum(1))
            grad_weight = self._weight_grad_columns(kept, matrix, geo)
        self.weight.accumulate(grad_weight)
        ws.give(name, kept)
        if not self.needs_input_grad:
            return None
        if geo.rows:
            padded = _rows.input_grad(grad, self.weight.data, geo, g, ws)
        else:
            if matrix is None:
                matrix = _im2col.grad_matrix(grad, ws)
            padded = self._input_grad_fold(matrix, geo)
        grad_input = _im2col.unpad(padded, geo, self.padding_mode)
        return grad_input.squeeze(0) if unbatched else grad_input

    def _weight_grad_columns(self, columns: Tensor, matrix: Tensor, geo: ConvGeometry) -> Tensor:
        """dL/dW = G X^T, computed as (X G^T)^T: faster for these shapes."""
        g, co = self.groups, self.out_channels
        if g == 1:
            grad_weight = torch.mm(columns, matrix.t()).t()
        else:
            grad_weight = torch.bmm(
                columns.view(g, -1, geo.length), matrix.view(g, co // g, geo.length).transpose(1, 2)
            ).transpose(1, 2)
        return grad_weight.reshape(self.weight.data.shape).contiguous()

    def _input_grad_fold(self, matrix: Tensor, geo: ConvGeometry) -> Tensor:
        """Padded input gradient: W^T G folded back onto the input ("fold" method)."""
        g, co = self.groups, self.out_channels
        w_t = self.weight.data.reshape(g, co // g, -1).transpose(1, 2)
        grouped = matrix.view(g, co // g, geo.length)
        grad_columns = self._workspace.scratch(
            "grad_columns", (geo.c * geo.kh * geo.kw, geo.length), matrix
        )
        if g == 1:
            torch.mm(w_t[0], grouped[0], out=grad_columns)
        else:
            torch.bmm(w_t, grouped, out=grad_columns.view(g, -1, geo.length))
        padded = self._workspace.scratch("grad_input", (geo.c, geo.n, geo.hp, geo.wp), matrix)
        return _im2col.fold(grad_columns, geo, padded)

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
