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

from typing import NamedTuple

import torch
from torch import Tensor

from scidevnn_rnn.cell_base import RNNCellBase, gate_chunks, gate_chunks_per_step


class GRUGates(NamedTuple):
    """Views of one step's (N, 3H) gate tensor: the whole, ``r`` and ``z`` together, and each."""

    all: Tensor
    rz: Tensor
    r: Tensor
    z: Tensor
    n: Tensor


def gru_gate_views(buffer: Tensor) -> GRUGates:
    """GRUGates of a (..., 3H) tensor."""
    return GRUGates(*gate_chunks(buffer, 3))


def gru_gate_views_per_step(buffer: Tensor) -> list[GRUGates]:
    """GRUGates of each step of a (T, N, 3H) tensor (built once: the loops slice nothing)."""
    return [GRUGates(*step) for step in gate_chunks_per_step(buffer, 3)]


def gru_gates_forward(
    gi: GRUGates, gh: GRUGates, h_prev: Tensor | None, acts: GRUGates, h_out: Tensor
) -> None:
    """Write the activations ``(r, z, n)`` into ``acts`` and h' into ``h_out``.

    ``gi``, ``gh``: input and hidden projections with their biases (``acts`` may be ``gi``
    itself: each element is read before it is written); ``h_prev=None`` means zero.
    """
    torch.add(gi.rz, gh.rz, out=acts.rz)
    acts.rz.sigmoid_()
    torch.addcmul(gi.n, acts.r, gh.n, out=acts.n)
    acts.n.tanh_()
    if h_prev is None:
        torch.addcmul(acts.n, acts.z, acts.n, value=-1, out=h_out)
    else:
        torch.lerp(acts.n, h_prev, acts.z, out=h_out)


def gru_step_backward(
    dh: Tensor,
    acts: GRUGates,
    gh_n: Tensor,
    h_prev: Tensor | None,
    grad_gi: GRUGates,
    grad_gh: GRUGates,
) -> Tensor:
    """Write d loss / d gi and d loss / d gh; return the direct part ``dh' z`` of dh.

    Every derivative is formed here from the step's own (cache-resident) activations.
    """
    r, z, n = acts.r, acts.z, acts.n
    dn = torch.addcmul(dh, dh, z, value=-1)  # dh' (1 - z)
    torch.addcmul(dn, dn * n, n, value=-1, out=grad_gi.n)  # * (1 - n^2)
    dz = n.neg() if h_prev is None else h_prev - n
    dz.mul_(dh).mul_(z)
    torch.addcmul(dz, dz, z, value=-1, out=grad_gi.z)  # dh' (h - n) z (1 - z)
    dr = grad_gi.n * gh_n
    dr.mul_(r)
    torch.addcmul(dr, dr, r, value=-1, out=grad_gi.r)  # dn gh_n r (1 - r)
    grad_gh.rz.copy_(grad_gi.rz)
    torch.mul(grad_gi.n, r, out=grad_gh.n)
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
        batched, x, (hx,) = self.as_batch(x, hx=hx)
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
        gru_gates_forward(gru_gate_views(gi), gru_gate_views(gh), hx, gru_gate_views(acts), h_new)
        self.save_for_backward(x, hx, acts, gh[:, 2 * self.hidden_size :], batched)
        return h_new if batched else h_new.squeeze(0)

    def backward(self, grad_output: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
        x, h, acts, gh_n, batched = self.saved_tensors()
        (grad_output,) = self.as_batch_grads(batched, x.shape[0], grad_h=grad_output)
        if grad_output is None:
            grad_output = torch.zeros_like(gh_n)
        grad_gi = torch.empty_like(acts)
        grad_gh = torch.empty_like(acts)
        direct = gru_step_backward(
            grad_output,
            gru_gate_views(acts),
            gh_n,
            h,
            gru_gate_views(grad_gi),
            gru_gate_views(grad_gh),
        )
        grad_x = self.accumulate_grads(grad_gi, grad_gh, x, h)
        grad_h = torch.addmm(direct, grad_gh, self.weight_hh.data) if h is not None else None
        grad_x, grad_h = self.unbatch(batched, grad_x, grad_h)
        return grad_x, grad_h
