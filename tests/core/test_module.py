"""Module API against torch.nn: names, state_dict, modes, repr, Sequential, the backward stack."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import scidevnn as sd
from scidevnn.errors import BackwardError, StateDictError


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Reproducible random inputs in every test."""
    torch.manual_seed(0)


class OurNet(sd.Module):
    """A hand-built module with attributes, nested containers and a bias-free layer."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = sd.Sequential(sd.Linear(6, 5), sd.Sigmoid(), sd.Linear(5, 4, bias=False))
        self.act = sd.Sigmoid()
        self.head = sd.Linear(4, 3)
        self.register_buffer("scale", torch.ones(3))


class TorchNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(6, 5), nn.Sigmoid(), nn.Linear(5, 4, bias=False))
        self.act = nn.Sigmoid()
        self.head = nn.Linear(4, 3)
        self.register_buffer("scale", torch.ones(3))


def our_mlp() -> sd.Sequential:
    return sd.Sequential(
        sd.Linear(8, 6),
        sd.Sigmoid(),
        sd.Sequential(sd.Linear(6, 4), sd.Identity()),
        sd.Linear(4, 2),
    )


def torch_mlp() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(8, 6),
        nn.Sigmoid(),
        nn.Sequential(nn.Linear(6, 4), nn.Identity()),
        nn.Linear(4, 2),
    )


def test_named_parameters_and_buffers_match_torch() -> None:
    ours, theirs = OurNet(), TorchNet()
    assert [(n, p.shape) for n, p in ours.named_parameters()] == [
        (n, p.shape) for n, p in theirs.named_parameters()
    ]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    assert [type(m).__name__ for m in ours.children()] == [
        type(m).__name__ for m in theirs.children()
    ]
    assert len(list(ours.parameters())) == len(list(theirs.parameters()))


def test_state_dict_keys_and_order_match_torch() -> None:
    for ours, theirs in ((OurNet(), TorchNet()), (our_mlp(), torch_mlp())):
        assert list(ours.state_dict()) == list(theirs.state_dict())
        for key, value in theirs.state_dict().items():
            assert ours.state_dict()[key].shape == value.shape


def test_load_state_dict_from_torch_and_back() -> None:
    ours, theirs = our_mlp(), torch_mlp()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(5, 8)
    with torch.no_grad():
        expected = theirs(x)
    torch.testing.assert_close(ours(x), expected, atol=1e-6, rtol=1e-6)

    back = torch_mlp()
    fresh = our_mlp()
    back.load_state_dict(fresh.state_dict())
    for (name, param), (their_name, their_param) in zip(
        fresh.named_parameters(), back.named_parameters(), strict=True
    ):
        assert name == their_name
        assert torch.equal(param.data, their_param.detach())


def test_load_state_dict_copies_values_in_place() -> None:
    ours, theirs = our_mlp(), torch_mlp()
    first = ours[0]
    assert isinstance(first, sd.Linear)
    weight = first.weight.data
    ours.load_state_dict(theirs.state_dict())
    assert first.weight.data is weight
    assert torch.equal(weight, theirs.state_dict()["0.weight"])


def test_load_state_dict_strict_errors_and_non_strict_keys_match_torch() -> None:
    ours, theirs = our_mlp(), torch_mlp()
    state = theirs.state_dict()
    del state["0.bias"]
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(StateDictError, match=r"0\.bias"):
        ours.load_state_dict(state)
    with pytest.raises(RuntimeError):
        theirs.load_state_dict(state)
    result = ours.load_state_dict(state, strict=False)
    expected = torch_mlp().load_state_dict(state, strict=False)
    assert result.missing_keys == expected.missing_keys
    assert result.unexpected_keys == expected.unexpected_keys

    bad_shape = torch_mlp().state_dict()
    bad_shape["3.weight"] = torch.zeros(3, 4)
    with pytest.raises(StateDictError, match=r"3\.weight"):
        ours.load_state_dict(bad_shape)


def test_train_eval_propagate_like_torch() -> None:
    ours, theirs = OurNet(), TorchNet()
    assert ours.training and theirs.training
    ours.eval()
    theirs.eval()
    assert [m.training for m in ours.modules()] == [m.training for m in theirs.modules()]
    assert not any(m.training for m in ours.modules())
    assert ours.train() is ours
    assert all(m.training for m in ours.modules())
    ours.encoder.train(False)
    theirs.train()
    theirs.encoder.train(False)
    assert [m.training for m in ours.modules()] == [m.training for m in theirs.modules()]


def test_zero_grad() -> None:
    layer = sd.Linear(3, 2)
    layer(torch.randn(4, 3))
    layer.backward(torch.randn(4, 2))
    assert layer.weight.grad is not None
    layer(torch.randn(4, 3))
    layer.backward(torch.randn(4, 2))
    layer.zero_grad(set_to_none=False)
    assert layer.weight.grad is not None and layer.bias is not None
    assert bool((layer.weight.grad == 0).all()) and layer.bias.grad is not None
    assert bool((layer.bias.grad == 0).all())
    layer.zero_grad()
    assert layer.weight.grad is None and layer.bias.grad is None


def test_to_dtype_matches_torch_double() -> None:
    ours, theirs = our_mlp(), torch_mlp()
    ours.load_state_dict(theirs.state_dict())
    assert ours.to(dtype=torch.float64) is ours
    theirs.double()
    assert all(p.dtype == torch.float64 for p in ours.parameters())
    x = torch.randn(3, 8, dtype=torch.float64)
    with torch.no_grad():
        expected = theirs(x)
    out = ours(x)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-12)
    ours.float()
    assert all(p.dtype == torch.float32 for p in ours.parameters())


def test_to_keeps_integer_buffers() -> None:
    module = sd.Module()
    module.register_buffer("count", torch.tensor(3))
    module.register_buffer("mean", torch.zeros(2))
    module.to(dtype=torch.float64)
    buffers = dict(module.named_buffers())
    assert buffers["count"].dtype == torch.int64
    assert buffers["mean"].dtype == torch.float64


def test_repr_matches_torch() -> None:
    ours = sd.Sequential(
        sd.Linear(4, 5),
        sd.Sigmoid(),
        sd.Softmax(dim=1),
        sd.LogSoftmax(),
        sd.Flatten(),
        sd.Identity(),
        sd.Sequential(sd.Linear(2, 3, bias=False)),
    )
    theirs = nn.Sequential(
        nn.Linear(4, 5),
        nn.Sigmoid(),
        nn.Softmax(dim=1),
        nn.LogSoftmax(),
        nn.Flatten(),
        nn.Identity(),
        nn.Sequential(nn.Linear(2, 3, bias=False)),
    )
    assert repr(ours) == repr(theirs)
    assert repr(sd.Flatten(0, 2)) == repr(nn.Flatten(0, 2))


def test_sequential_indexing_slicing_append_len_iter() -> None:
    ours, theirs = our_mlp(), torch_mlp()
    assert len(ours) == len(theirs) == 4
    assert [type(m).__name__ for m in ours] == [type(m).__name__ for m in theirs]
    assert ours[0] is next(iter(ours))
    assert ours[-1] is list(ours)[-1]
    assert isinstance(ours[-1], sd.Linear)
    part, their_part = ours[1:3], theirs[1:3]
    assert isinstance(part, sd.Sequential) and isinstance(their_part, nn.Sequential)
    assert [type(m).__name__ for m in part] == [type(m).__name__ for m in their_part]
    assert part[0] is ours[1]
    assert list(part.state_dict()) == list(their_part.state_dict())
    with pytest.raises(IndexError):
        ours[4]
    with pytest.raises(IndexError):
        ours[-5]
    ours.append(sd.Sigmoid())
    theirs.append(nn.Sigmoid())
    assert len(ours) == 5
    assert isinstance(ours[4], sd.Sigmoid)
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]


def test_sequential_forward_backward_matches_autograd() -> None:
    ours, theirs = our_mlp().double(), torch_mlp().double()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(7, 8, dtype=torch.float64)
    g = torch.randn(7, 2, dtype=torch.float64)
    x_ref = x.clone().requires_grad_(True)
    theirs(x_ref).backward(g)
    out = ours(x)
    grad_x = ours.backward(g)
    assert out.shape == (7, 2)
    torch.testing.assert_close(grad_x, x_ref.grad, atol=1e-12, rtol=1e-10)
    for (name, param), (_, their_param) in zip(
        ours.named_parameters(), theirs.named_parameters(), strict=True
    ):
        assert param.grad is not None, name
        torch.testing.assert_close(param.grad, their_param.grad, atol=1e-12, rtol=1e-10)


def test_backward_stack_three_calls_accumulate_like_torch() -> None:
    ours = sd.Linear(5, 4).double()
    theirs = nn.Linear(5, 4).double()
    theirs.load_state_dict(ours.state_dict())
    xs = [torch.randn(3, 5, dtype=torch.float64) for _ in range(3)]
    gs = [torch.randn(3, 4, dtype=torch.float64) for _ in range(3)]
    refs = [x.clone().requires_grad_(True) for x in xs]
    outputs = [theirs(r) for r in refs]
    torch.autograd.backward(outputs, gs)

    for x in xs:
        ours(x)
    assert ours.pending_backward == 3
    input_grads: list[Tensor] = []
    for g in reversed(gs):
        grad = ours.backward(g)
        assert grad is not None
        input_grads.append(grad)
    input_grads.reverse()
    assert ours.pending_backward == 0
    for grad, ref in zip(input_grads, refs, strict=True):
        torch.testing.assert_close(grad, ref.grad, atol=1e-12, rtol=1e-10)
    assert ours.weight.grad is not None and ours.bias is not None
    torch.testing.assert_close(ours.weight.grad, theirs.weight.grad, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(ours.bias.grad, theirs.bias.grad, atol=1e-12, rtol=1e-10)


def test_backward_without_pending_forward_raises() -> None:
    layer = sd.Linear(3, 2)
    with pytest.raises(BackwardError, match="Linear"):
        layer.backward(torch.randn(1, 2))
    layer(torch.randn(1, 3))
    layer.backward(torch.randn(1, 2))
    with pytest.raises(BackwardError):
        layer.backward(torch.randn(1, 2))
    for module in (sd.Sigmoid(), sd.Softmax(1), sd.LogSoftmax(1), sd.Flatten(), sd.Identity()):
        with pytest.raises(BackwardError, match=type(module).__name__):
            module.backward(torch.randn(2, 3))


def test_no_grad_saves_nothing() -> None:
    net = our_mlp()
    with sd.no_grad():
        assert not sd.is_grad_enabled()
        for _ in range(3):
            net(torch.randn(2, 8))
    assert sd.is_grad_enabled()
    assert all(m.pending_backward == 0 for m in net.modules())
    with pytest.raises(BackwardError):
        net.backward(torch.randn(2, 2))


def test_clear_saved_forgets_pending_forwards() -> None:
    net = our_mlp()
    net(torch.randn(2, 8))
    assert net[0].pending_backward == 1
    net.clear_saved()
    assert all(m.pending_backward == 0 for m in net.modules())


def test_needs_input_grad_false_returns_none_but_fills_parameter_grads() -> None:
    ours = sd.Linear(4, 3).double()
    theirs = nn.Linear(4, 3).double()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 4, dtype=torch.float64)
    g = torch.randn(2, 3, dtype=torch.float64)
    theirs(x).backward(g)
    ours.needs_input_grad = False
    ours(x)
    assert ours.backward(g) is None
    assert ours.weight.grad is not None
    torch.testing.assert_close(ours.weight.grad, theirs.weight.grad, atol=1e-12, rtol=1e-10)

    for module in (sd.Sigmoid(), sd.Softmax(1), sd.LogSoftmax(1), sd.Flatten(), sd.Identity()):
        module.needs_input_grad = False
        module(torch.randn(2, 3))
        assert module.backward(torch.randn(2, 3)) is None
        assert module.pending_backward == 0


def test_sequential_passes_needs_input_grad_to_first_layer() -> None:
    net = our_mlp()
    net.needs_input_grad = False
    net(torch.randn(2, 8))
    assert net.backward(torch.randn(2, 2)) is None
    assert all(p.grad is not None for p in net.parameters())


def test_sequential_skips_gradients_nobody_needs_like_autograd() -> None:
    """Flatten -> Sigmoid -> Linear -> Sigmoid -> Linear on data: only what autograd computes."""
    torch.manual_seed(0)
    ours = sd.Sequential(
        sd.Flatten(), sd.Sigmoid(), sd.Linear(6, 4), sd.Sigmoid(), sd.Linear(4, 2)
    ).double()
    theirs = nn.Sequential(
        nn.Flatten(), nn.Sigmoid(), nn.Linear(6, 4), nn.Sigmoid(), nn.Linear(4, 2)
    ).double()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(3, 2, 3, dtype=torch.float64)
    g = torch.randn(3, 2, dtype=torch.float64)
    ours.needs_input_grad = False
    ours(x)
    # the parameter-free prefix saved nothing; the first Linear skips its input gradient
    assert ours[0].pending_backward == 0 and ours[1].pending_backward == 0
    assert ours[2].needs_input_grad is False and ours[3].needs_input_grad is True
    assert ours.backward(g) is None
    assert all(m.pending_backward == 0 for m in ours.modules())
    theirs(x).backward(g)
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-12, rtol=1e-10, msg=name)

    ours.needs_input_grad = True
    xr = x.clone().requires_grad_(True)
    theirs(xr).backward(g)
    ours(x)
    torch.testing.assert_close(ours.backward(g), xr.grad, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("in_features", "out_features"), [(784, 256), (256, 10), (3, 1)])
def test_linear_init_equals_torch_with_same_seed(
    in_features: int, out_features: int, dtype: torch.dtype
) -> None:
    torch.manual_seed(1234)
    ours = sd.Linear(in_features, out_features, dtype=dtype)
    torch.manual_seed(1234)
    theirs = nn.Linear(in_features, out_features, dtype=dtype)
    assert ours.bias is not None
    assert torch.equal(ours.weight.data, theirs.weight.detach())
    assert torch.equal(ours.bias.data, theirs.bias.detach())


def test_linear_dtype_argument() -> None:
    layer = sd.Linear(3, 2, dtype=torch.float64)
    assert layer.weight.dtype == torch.float64
    assert layer.get_config() == {"in_features": 3, "out_features": 2, "bias": True}
