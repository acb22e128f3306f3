"""GRUCell: one gated recurrent unit step, and the gate arithmetic GRU reuses.

With ``gi = x W_ih^T + b_ih`` and ``gh = h W_hh^T + b_hh`` split in torch's gate order
``r, z, n`` (each ``hidden`` wide)::

    r = sigmoid(gi_r + gh_r)   z = sigmoid(gi_z + gh_z)   n = tanh(gi_n + r * gh_n)
    h' = (1 - z) * n + z * h

Backward, from ``dh'``::

    dn = dh' (1 - z)(1 - n^2)     dz = dh' (h - n) z (1 - z)     dr = dn gh_n r (1 - r)
    dgi = (dr, dz, dn)            dgh = (dr, dz, dn * r)         dh = dh' z + dgh W_hh
"""

from __future__ import annotations

import torch
from torch import Tensor

from scidevnn_rnn._common import check_grad_shape
from scidevnn_rnn.cell_base import RNNCellBase


def gru_gates_forward(
    gi: Tensor, gh: Tensor, h_prev: Tensor | None, acts_out: Tensor, h_out: Tensor
) -> None:
    """Write the activations ``(r, z, n)`` (..., 3H) into ``acts_out`` and h' into ``h_out``.

    ``gi``, ``gh``: input and hidden projections with their biases; ``h_prev=None`` means zero.
    """
    hidden = h_out.shape[-1]
    rz = acts_out[..., : 2 * hidden]
    torch.add(gi[..., : 2 * hidden], gh[..., : 2 * hidden], out=rz)
    rz.sigmoid_()
    r, z, n = acts_out.chunk(3, dim=-1)
    torch.addcmul(gi[..., 2 * hidden :], r, gh[..., 2 * hidden :], out=n)
    n.tanh_()
    if h_prev is None:
        torch.addcmul(n, z, n, value=-1, out=h_out)
    else:
        torch.lerp(n, h_prev, z, out=h_out)


def gru_backward_coefficients(
    acts: Tensor, gh_n: Tensor, h_prev: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Factors that do not depend on the incoming gradient, for any number of steps.

    Returns ``Q = (1 - z)(1 - n^2)``, ``P = (h - n) z (1 - z)``, ``R = gh_n r (1 - r)``, so that
    ``dn = dh' Q``, ``dz = dh' P`` and ``dr = dn R``.
    """
    r, z, n = acts.chunk(3, dim=-1)
    q = (1 - z) * (1 - n * n)
    p = z * (1 - z)
    p = p.mul_(n).neg_() if h_prev is None else p.mul_(h_prev - n)
    return q, p, gh_n * r * (1 - r)


def gru_step_backward(
    dh: Tensor,
    acts: Tensor,
    q: Tensor,
    p: Tensor,
    r_factor: Tensor,
    grad_gi_out: Tensor,
    grad_gh_out: Tensor,
) -> Tensor:
    """Write d loss / d gi and d loss / d gh (..., 3H); return the direct part ``dh' z``."""
    hidden = dh.shape[-1]
    r, z, _ = acts.chunk(3, dim=-1)
    gi_r, gi_z, gi_n = grad_gi_out.chunk(3, dim=-1)
    torch.mul(dh, q, out=gi_n)
    torch.mul(dh, p, out=gi_z)
    torch.mul(gi_n, r_factor, out=gi_r)
    grad_gh_out[..., : 2 * hidden].copy_(grad_gi_out[..., : 2 * hidden])
    torch.mul(gi_n, r, out=grad_gh_out[..., 2 * hidden :])
    return dh * z


class GRUCell(RNNCellBase):
    """One GRU step: ``h' = GRUCell(x, h)``; formulas in the module docstring.

    Shapes: x (N, input_size) or (input_size,); h, h' (N, hidden_size) or (hidden_size,);
    ``hx=None`` means zeros. Parameters as torch: ``weight_ih`` (3*hidden, input),
    ``weight_hh`` (3*hidden, hidden), ``bias_ih``, ``bias_hh`` (3*hidden,), gate order r, z, n.

    ``backward(grad_h')`` returns ``(grad_x, grad_h)``: dW_ih += dgi^T x, dW_hh += dgh^T h,
    db_ih += sum_rows dgi, db_hh += sum_rows dgh, grad_x = dgi W_ih. ``grad_x`` is None when
    ``needs_input_grad`` is off, ``grad_h`` when the forward had no ``hx``. Apply the cell at
    every step, then call backward once per step in reverse order.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(input_size, hidden_size, bias, 3, device=device, dtype=dtype)

    def forward(self, x: Tensor, hx: Tensor | None = None) -> Tensor:
        batched = self.check_input(x)
        if hx is not None:
            self.check_state(hx, x, "hx")
        if not batched:
            x = x.unsqueeze(0)
            hx = None if hx is None else hx.unsqueeze(0)
        gi = self.input_projection(x, fold_hidden_bias=False)
        gh: Tensor
        if hx is not None:
            gh = hx @ self.weight_hh.data.t()
            if self.bias_hh is not None:
                gh.add_(self.bias_hh.data)
        elif self.bias_hh is not None:
            gh = self.bias_hh.data.expand_as(gi)
        else:
            gh = torch.zeros_like(gi)
        acts = torch.empty_like(gi)
        h_new = gi.new_empty(x.shape[0], self.hidden_size)
        gru_gates_forward(gi, gh, hx, acts, h_new)
        self.save_for_backward(x, hx, acts, gh[:, 2 * self.hidden_size :], batched)
        return h_new if batched else h_new.squeeze(0)

    def backward(self, grad_output: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
        x, h, acts, gh_n, batched = self.saved_tensors()
        shape = tuple(gh_n.shape) if batched else (self.hidden_size,)
        check_grad_shape("GRUCell", "grad_h", grad_output, shape)
        if grad_output is None:
            grad_output = torch.zeros_like(gh_n)
        elif not batched:
            grad_output = grad_output.unsqueeze(0)
        q, p, r_factor = gru_backward_coefficients(acts, gh_n, h)
        grad_gi = torch.empty_like(acts)
        grad_gh = torch.empty_like(acts)
        direct = gru_step_backward(grad_output, acts, q, p, r_factor, grad_gi, grad_gh)
        self.accumulate_weight_grads(grad_gi, grad_gh, x, h)
        grad_x = grad_gi @ self.weight_ih.data if self.needs_input_grad else None
        grad_h = torch.addmm(direct, grad_gh, self.weight_hh.data) if h is not None else None
        if not batched:
            grad_x = None if grad_x is None else grad_x.squeeze(0)
            grad_h = None if grad_h is None else grad_h.squeeze(0)
        return grad_x, grad_h
