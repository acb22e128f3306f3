"""The course interface of the rnn plugin: ``SciDevNN.SDmodules.RNNCell``, ``LSTMCell`` and
``Tanh`` on sequences of every length from 1 to 12, with init dicts in torch's layout,
``backward(x, state, grad)`` once per step, ``get_grad_test()`` against torch autograd."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from rnn_reference import DTYPES, leaf

from SciDevNN import SDmodules, SDoptim
from scidevnn.testing import assert_close

INPUT, HIDDEN = 3, 4


def init_from(cell: torch.nn.RNNCell | torch.nn.LSTMCell) -> dict[str, torch.Tensor]:
    return {
        "W_ih": cell.weight_ih.detach().clone(),
        "W_hh": cell.weight_hh.detach().clone(),
        "b_ih": cell.bias_ih.detach().clone(),
        "b_hh": cell.bias_hh.detach().clone(),
    }


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("initial_state", [False, True], ids=["zero-state", "given-state"])
@pytest.mark.parametrize("name", ["RNNCell", "LSTMCell"])
def test_course_cell_over_every_length(name: str, initial_state: bool, dtype: torch.dtype) -> None:
    lstm = name == "LSTMCell"
    for length in range(1, 13):
        theirs = getattr(torch.nn, name)(INPUT, HIDDEN, dtype=dtype)
        ours = getattr(SDmodules, name)(INPUT, HIDDEN, init=init_from(theirs))
        xs = torch.randn(length, 2, INPUT, dtype=dtype)
        h0, c0 = torch.randn(2, HIDDEN, dtype=dtype), torch.randn(2, HIDDEN, dtype=dtype)
        grad_hs = torch.randn(length, 2, HIDDEN, dtype=dtype)

        xs_ref, h0_ref, c0_ref = leaf(xs), leaf(h0), leaf(c0)
        state_ref: Any = ((h0_ref, c0_ref) if lstm else h0_ref) if initial_state else None
        loss = torch.zeros((), dtype=dtype)
        for t in range(length):
            state_ref = theirs(xs_ref[t], state_ref)
            loss = loss + ((state_ref[0] if lstm else state_ref) * grad_hs[t]).sum()
        torch.autograd.backward(loss)

        states: list[Any] = [((h0, c0) if lstm else h0) if initial_state else None]
        for t in range(length):
            states.append(ours(xs[t], states[-1]))
        final = states[-1][0] if lstm else states[-1]
        assert_close(final, (state_ref[0] if lstm else state_ref).detach(), f"{name} h_T")

        grad_state: Any = None
        grad_xs = []
        grad: Any
        for t in reversed(range(length)):
            if lstm:
                grad_h = grad_hs[t] if grad_state is None else grad_state[0] + grad_hs[t]
                grad = (grad_h, None if grad_state is None else grad_state[1])
            else:
                grad = grad_hs[t] if grad_state is None else grad_state + grad_hs[t]
            grad_x, grad_state = ours.backward(xs[t], states[t], grad)
            grad_xs.append(grad_x)
        grads = ours.get_grad_test()
        assert_close(torch.stack(grad_xs[::-1]), xs_ref.grad, f"{name} T={length} gradOut")
        assert xs_ref.grad is not None
        assert_close(grads["gradOut"], xs_ref.grad[0], "gradOut of the last backward (step 0)")
        for key, param in (
            ("gradW_ih", theirs.weight_ih),
            ("gradW_hh", theirs.weight_hh),
            ("gradB_ih", theirs.bias_ih),
            ("gradB_hh", theirs.bias_hh),
        ):
            assert_close(grads[key], param.grad, f"{name} T={length} {key}")
        if initial_state:
            assert_close(grads["gradH"], h0_ref.grad, f"{name} T={length} gradH")
            if lstm:
                assert_close(grads["gradC"], c0_ref.grad, f"{name} T={length} gradC")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_course_tanh_over_every_length(dtype: torch.dtype) -> None:
    tanh = SDmodules.Tanh()
    for length in range(1, 13):
        x = torch.randn(length, 2, 3, dtype=dtype) * 2
        grad = torch.randn(length, 2, 3, dtype=dtype)
        x_ref = leaf(x)
        torch.autograd.backward(torch.tanh(x_ref), grad)
        assert_close(tanh(x), torch.tanh(x), "Tanh forward")
        assert_close(tanh.backward(x, grad), x_ref.grad, "Tanh backward")
        assert_close(tanh.get_grad_test(), x_ref.grad, "Tanh get_grad_test")


def test_course_cell_init_layout_and_errors() -> None:
    theirs = torch.nn.LSTMCell(INPUT, HIDDEN, dtype=torch.float64)
    init = init_from(theirs)
    ours = SDmodules.LSTMCell(INPUT, HIDDEN, init=init)
    assert ours.cell.weight_ih.dtype == torch.float64  # the layer takes init's dtype
    init["W_ih"].zero_()
    assert ours.cell.weight_ih.data.any()  # copied, not shared
    with pytest.raises(ValueError, match=r"init\['W_ih'\] must have shape \(16, 3\)"):
        SDmodules.LSTMCell(INPUT, HIDDEN, init={"W_ih": torch.zeros(3, 16)})
    with pytest.raises(ValueError, match="unknown init keys"):
        SDmodules.RNNCell(INPUT, HIDDEN, init={"W": torch.zeros(4, 3)})
    with pytest.raises(ValueError, match="RNNCell: input has 5 features"):
        SDmodules.RNNCell(INPUT, HIDDEN)(torch.randn(2, 5))
    no_bias = SDmodules.RNNCell(INPUT, HIDDEN, bias=False, nonlinearity="relu")
    no_bias.backward(torch.randn(2, INPUT), torch.randn(2, HIDDEN))
    assert "gradB_ih" not in no_bias.get_grad_test()


def test_course_cell_apply_grad_and_zero_grad() -> None:
    ours = SDmodules.RNNCell(INPUT, HIDDEN, optimizer=SDoptim.GradientDescend(lr=0.1))
    before = ours.cell.weight_hh.data.clone()
    x, h = torch.randn(2, INPUT), torch.randn(2, HIDDEN)
    ours.backward(x, h, torch.ones(2, HIDDEN))
    grad = ours.get_grad_test()["gradW_hh"].clone()
    ours.apply_grad()
    assert_close(ours.cell.weight_hh.data, before - 0.1 * grad, "weight_hh after one step")
    ours.zero_grad()
    assert ours.get_grad_test()["gradW_hh"] is None
