"""MSELoss and CrossEntropyLoss against torch.nn and autograd, in every combination of options."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

import scidevnn as sd
from scidevnn.errors import BackwardError
from scidevnn.testing import check_finite_differences, check_layer

DTYPES = [torch.float32, torch.float64]
REDUCTIONS = ["mean", "sum", "none"]


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Reproducible random inputs in every test."""
    torch.manual_seed(0)


class LossOn(sd.Module):
    """A criterion with its target fixed, seen as a one-input layer so check_layer can drive it."""

    def __init__(self, criterion: sd.Loss, target: Tensor) -> None:
        super().__init__()
        self.criterion = criterion
        self.target = target

    def forward(self, x: Tensor) -> Tensor:
        return self.criterion(x, self.target)

    def backward(self, grad_output: Tensor) -> Tensor | None:
        return self.criterion.backward(grad_output)


def check_loss(
    ours: sd.Loss, theirs: nn.Module, x: Tensor, target: Tensor, **tolerance: Any
) -> Tensor:
    """Loss value and d loss / d x (for a random grad_output) equal torch's; returns our loss."""
    output: Tensor = check_layer(
        LossOn(ours, target), lambda logits: theirs(logits, target), x, **tolerance
    )
    return output


# ---------------------------------------------------------------------------------- MSELoss
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(4, 3), (1, 1), (5,), (), (2, 3, 4)])
def test_mse(dtype: torch.dtype, reduction: str, shape: tuple[int, ...]) -> None:
    x = torch.randn(shape, dtype=dtype)
    target = torch.randn(shape, dtype=dtype)
    check_loss(sd.MSELoss(reduction=reduction), nn.MSELoss(reduction=reduction), x, target)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_large_values(reduction: str) -> None:
    x = torch.randn(6, 4) * 1e4
    target = torch.randn(6, 4) * 1e4
    loss = check_loss(sd.MSELoss(reduction=reduction), nn.MSELoss(reduction=reduction), x, target)
    assert bool(loss.isfinite().all())


@pytest.mark.filterwarnings("ignore:Using a target size:UserWarning")
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_broadcast_target_warns_and_matches_torch(reduction: str) -> None:
    x = torch.randn(4, 1, dtype=torch.float64)
    target = torch.randn(4, dtype=torch.float64)
    with pytest.warns(UserWarning, match="MSELoss"):
        check_loss(sd.MSELoss(reduction=reduction), nn.MSELoss(reduction=reduction), x, target)


def test_mse_integer_target_like_torch() -> None:
    x = torch.randn(3, 2)
    target = torch.randint(0, 3, (3, 2))
    loss = check_loss(sd.MSELoss(), nn.MSELoss(), x, target)
    assert loss.dtype == torch.float32


def test_mse_finite_differences() -> None:
    target = torch.randn(3, 4, dtype=torch.float64)
    for reduction in REDUCTIONS:
        check_finite_differences(
            LossOn(sd.MSELoss(reduction=reduction), target), torch.randn(3, 4, dtype=torch.float64)
        )


def test_mse_errors() -> None:
    with pytest.raises(ValueError, match=r"MSELoss.*\(3,\).*\(2, 4\)"):
        sd.MSELoss()(torch.randn(2, 4), torch.randn(3))
    with pytest.raises(ValueError, match="reduction"):
        sd.MSELoss(reduction="average")


# ------------------------------------------------------------------------ CrossEntropyLoss
# prediction shape, class-index target shape
CE_SHAPES = [
    ((5, 4), (5,)),
    ((1, 4), (1,)),
    ((4,), ()),
    ((3, 4, 5), (3, 5)),
    ((2, 4, 3, 2), (2, 3, 2)),
]
TARGET_KINDS = ["index", "ignored", "ignore_class", "probabilities"]


def make_target(
    kind: str, x_shape: tuple[int, ...], index_shape: tuple[int, ...], dtype: torch.dtype
) -> tuple[Tensor, int]:
    """A target of the given kind, and the ignore_index to use with it."""
    n_classes = x_shape[0] if len(x_shape) == 1 else x_shape[1]
    if kind == "probabilities":
        return torch.rand(x_shape, dtype=dtype).softmax(0 if len(x_shape) == 1 else 1), -100
    target = torch.randint(0, n_classes, index_shape)
    if kind == "ignored":
        target.view(-1)[::2] = -100  # half the rows ignored (all of them for (C,))
        return target, -100
    if kind == "ignore_class":
        target.view(-1)[0] = 1
        return target, 1  # a real class index, ignored
    return target, -100


def make_pair(
    weight: Tensor | None, ignore_index: int, reduction: str, label_smoothing: float
) -> tuple[sd.CrossEntropyLoss, nn.CrossEntropyLoss]:
    options: dict[str, Any] = {
        "ignore_index": ignore_index,
        "reduction": reduction,
        "label_smoothing": label_smoothing,
    }
    return sd.CrossEntropyLoss(weight, **options), nn.CrossEntropyLoss(weight, **options)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.25])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("kind", TARGET_KINDS)
@pytest.mark.parametrize(("x_shape", "index_shape"), CE_SHAPES)
def test_cross_entropy_every_combination(
    dtype: torch.dtype,
    reduction: str,
    label_smoothing: float,
    weighted: bool,
    kind: str,
    x_shape: tuple[int, ...],
    index_shape: tuple[int, ...],
) -> None:
    x = torch.randn(x_shape, dtype=dtype) * 3
    target, ignore_index = make_target(kind, x_shape, index_shape, dtype)
    weight = torch.rand(4, dtype=dtype) + 0.1 if weighted else None
    ours, theirs = make_pair(weight, ignore_index, reduction, label_smoothing)
    check_loss(ours, theirs, x, target)


@pytest.mark.parametrize("kind", TARGET_KINDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_full_label_smoothing(kind: str, reduction: str) -> None:
    x = torch.randn(5, 3, dtype=torch.float64)
    target, ignore_index = make_target(kind, (5, 3), (5,), torch.float64)
    weight = torch.rand(3, dtype=torch.float64)
    check_loss(*make_pair(weight, ignore_index, reduction, 1.0), x, target)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", ["index", "probabilities"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_cross_entropy_extreme_logits(
    dtype: torch.dtype, reduction: str, kind: str, label_smoothing: float
) -> None:
    x = torch.randint(-1, 2, (6, 5)).to(dtype) * 1e4
    x[0] = torch.tensor([1e4, -1e4, -1e4, 1e4, -1e4])
    target, _ = make_target(kind, (6, 5), (6,), dtype)
    weight = torch.rand(5, dtype=dtype) + 0.5
    ours, theirs = make_pair(weight, -100, reduction, label_smoothing)
    loss = check_loss(ours, theirs, x, target)
    assert bool(loss.isfinite().all())
    ours(x, target)
    grad = ours.backward()
    assert grad is not None and bool(grad.isfinite().all())


def test_cross_entropy_all_ignored_mean_is_nan_with_zero_gradient_like_torch() -> None:
    x = torch.randn(3, 4, dtype=torch.float64)
    target = torch.full((3,), -100)
    for smoothing in (0.0, 0.2):
        loss = check_loss(
            *make_pair(torch.rand(4, dtype=torch.float64), -100, "mean", smoothing), x, target
        )
        assert bool(loss.isnan())


def test_cross_entropy_finite_differences() -> None:
    x = torch.randn(3, 4, 2, dtype=torch.float64)
    index_target = torch.tensor([[0, 3], [-100, 2], [1, 1]])
    prob_target = torch.rand(3, 4, 2, dtype=torch.float64)
    weight = torch.rand(4, dtype=torch.float64)
    for target in (index_target, prob_target):
        for reduction in REDUCTIONS:
            criterion = sd.CrossEntropyLoss(weight, reduction=reduction, label_smoothing=0.3)
            check_finite_differences(LossOn(criterion, target), x)


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 4),
    n_classes=st.integers(1, 6),
    extra=st.lists(st.integers(1, 3), max_size=2),
    reduction=st.sampled_from(REDUCTIONS),
    label_smoothing=st.sampled_from([0.0, 0.05, 0.5, 1.0]),
    weighted=st.booleans(),
    probabilities=st.booleans(),
    ignore_some=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_cross_entropy_random_shapes(
    batch: int,
    n_classes: int,
    extra: list[int],
    reduction: str,
    label_smoothing: float,
    weighted: bool,
    probabilities: bool,
    ignore_some: bool,
    seed: int,
) -> None:
    generator = torch.Generator().manual_seed(seed)
    x_shape = (batch, n_classes, *extra)
    x = torch.randn(x_shape, dtype=torch.float64, generator=generator) * 4
    if probabilities:
        target = torch.rand(x_shape, dtype=torch.float64, generator=generator)
    else:
        target = torch.randint(0, n_classes, (batch, *extra), generator=generator)
        if ignore_some:
            target.view(-1)[::3] = -100
    weight = torch.rand(n_classes, dtype=torch.float64, generator=generator) if weighted else None
    check_loss(*make_pair(weight, -100, reduction, label_smoothing), x, target)


def test_cross_entropy_default_grad_output_is_one() -> None:
    x = torch.randn(4, 3, dtype=torch.float64)
    target = torch.tensor([0, 2, 1, 2])
    for reduction in REDUCTIONS:
        ours = sd.CrossEntropyLoss(reduction=reduction, label_smoothing=0.1)
        x_ref = x.clone().requires_grad_(True)
        loss_ref = nn.CrossEntropyLoss(reduction=reduction, label_smoothing=0.1)(x_ref, target)
        loss_ref.sum().backward()
        ours(x, target)
        torch.testing.assert_close(ours.backward(), x_ref.grad, atol=1e-12, rtol=1e-10)
    ours = sd.CrossEntropyLoss()
    ours(x, target)
    x_ref = x.clone().requires_grad_(True)
    nn.CrossEntropyLoss()(x_ref, target).backward(torch.tensor(2.0, dtype=torch.float64))
    torch.testing.assert_close(ours.backward(2.0), x_ref.grad, atol=1e-12, rtol=1e-10)


def test_cross_entropy_uint8_and_int32_targets() -> None:
    x = torch.randn(4, 3, dtype=torch.float64)
    target = torch.tensor([0, 2, 1, 2])
    check_loss(sd.CrossEntropyLoss(), nn.CrossEntropyLoss(), x, target.to(torch.uint8))
    # torch insists on int64 here; we accept any integer dtype and agree with its int64 result
    ours = sd.CrossEntropyLoss()(x, target.to(torch.int32))
    torch.testing.assert_close(ours, nn.CrossEntropyLoss()(x, target), atol=1e-12, rtol=1e-10)


def test_cross_entropy_one_dim_input_accepts_target_of_shape_one() -> None:
    # torch's forward accepts a (1,) target for a (C,) input (its backward then fails): we treat
    # it as the 0-dim target it stands for
    x = torch.randn(5, dtype=torch.float64)
    for reduction in REDUCTIONS:
        ours, theirs = make_pair(None, -100, reduction, 0.0)
        loss = ours(x, torch.tensor([3]))
        torch.testing.assert_close(loss, theirs(x, torch.tensor([3])), atol=1e-12, rtol=1e-10)
        ours.backward()
        check_loss(ours, theirs, x, torch.tensor(3))


def test_cross_entropy_float_target_promotes_like_torch() -> None:
    x = torch.randn(3, 4)
    target = torch.rand(3, 4, dtype=torch.float64)
    # log-softmax runs in float32 on both sides: float32 accuracy, though the loss is float64
    loss = check_loss(sd.CrossEntropyLoss(), nn.CrossEntropyLoss(), x, target, atol=1e-6, rtol=1e-6)
    assert loss.dtype == torch.float64


def test_cross_entropy_stacks_two_forwards() -> None:
    ours = sd.CrossEntropyLoss()
    xs = [torch.randn(3, 4, dtype=torch.float64) for _ in range(2)]
    targets = [torch.tensor([0, 1, 3]), torch.rand(3, 4, dtype=torch.float64)]
    for x, target in zip(xs, targets, strict=True):
        ours(x, target)
    grads = [ours.backward(), ours.backward()][::-1]
    for x, target, grad in zip(xs, targets, grads, strict=True):
        x_ref = x.clone().requires_grad_(True)
        nn.CrossEntropyLoss()(x_ref, target).backward()
        torch.testing.assert_close(grad, x_ref.grad, atol=1e-12, rtol=1e-10)
    with pytest.raises(BackwardError, match="CrossEntropyLoss"):
        ours.backward()


def test_losses_save_nothing_under_no_grad() -> None:
    for criterion, target in (
        (sd.CrossEntropyLoss(), torch.tensor([0, 1])),
        (sd.MSELoss(), torch.randn(2, 3)),
    ):
        with sd.no_grad():
            criterion(torch.randn(2, 3), target)
        assert criterion.pending_backward == 0
        with pytest.raises(BackwardError):
            criterion.backward()


def test_losses_needs_input_grad_false() -> None:
    for criterion, target in (
        (sd.CrossEntropyLoss(), torch.tensor([0, 1])),
        (sd.MSELoss(), torch.randn(2, 3)),
    ):
        criterion.needs_input_grad = False
        criterion(torch.randn(2, 3), target)
        assert criterion.backward() is None
        assert criterion.pending_backward == 0


def test_cross_entropy_weight_is_a_buffer_like_torch() -> None:
    weight = torch.rand(3)
    ours, theirs = sd.CrossEntropyLoss(weight), nn.CrossEntropyLoss(weight)
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight"]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    assert list(sd.CrossEntropyLoss().state_dict()) == list(nn.CrossEntropyLoss().state_dict())
    new_weight = torch.rand(3)
    ours.load_state_dict(nn.CrossEntropyLoss(new_weight).state_dict())
    assert ours.weight is not None and torch.equal(ours.weight, new_weight)
    theirs.load_state_dict(ours.state_dict())
    assert torch.equal(theirs.state_dict()["weight"], new_weight)
    ours.to(dtype=torch.float64)
    assert ours.weight.dtype == torch.float64


def test_cross_entropy_config_is_json_and_rebuilds() -> None:
    ours = sd.CrossEntropyLoss(
        torch.tensor([0.5, 1.0, 2.0]), ignore_index=2, reduction="sum", label_smoothing=0.1
    )
    config = json.loads(json.dumps(ours.get_config()))
    rebuilt = sd.CrossEntropyLoss(**config)
    x, target = torch.randn(4, 3), torch.tensor([0, 2, 1, 1])
    torch.testing.assert_close(rebuilt(x, target), ours(x, target), atol=0, rtol=0)
    assert sd.MSELoss(reduction="sum").get_config() == {"reduction": "sum"}


@pytest.mark.parametrize(
    ("x_shape", "target", "error", "message"),
    [
        ((4, 3), torch.zeros(5, dtype=torch.long), ValueError, r"target shape \(5,\).*\(4, 3\)"),
        ((4, 3), torch.zeros(4, 1, dtype=torch.long), ValueError, r"\(4, 1\)"),
        ((2, 3, 5), torch.zeros(2, 4, dtype=torch.long), ValueError, r"\(2, 5\)"),
        ((3,), torch.zeros(2, dtype=torch.long), ValueError, r"target shape \(2,\)"),
        ((4, 3), torch.zeros(4), TypeError, "integer"),
        ((4, 3), torch.zeros(4, dtype=torch.bool), TypeError, "integer"),
        ((4, 3), torch.zeros(4, 3, dtype=torch.long), TypeError, "floating point"),
        ((4, 3), torch.tensor([0, 1, 3, 0]), IndexError, "target 3 is out of range for 3"),
        ((4, 3), torch.tensor([0, -1, 2, 0]), IndexError, "target -1"),
        ((), torch.tensor(0), ValueError, "class dimension"),
    ],
)
def test_cross_entropy_errors(
    x_shape: tuple[int, ...], target: Tensor, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"CrossEntropyLoss: .*{message}"):
        sd.CrossEntropyLoss()(torch.randn(x_shape), target)
    with pytest.raises((RuntimeError, ValueError, IndexError)):
        nn.CrossEntropyLoss()(torch.randn(x_shape), target)  # torch refuses it too


def test_cross_entropy_constructor_and_backward_errors() -> None:
    with pytest.raises(ValueError, match="reduction"):
        sd.CrossEntropyLoss(reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing"):
        sd.CrossEntropyLoss(label_smoothing=1.5)
    with pytest.raises(ValueError, match="weight"):
        sd.CrossEntropyLoss(torch.ones(2, 2))
    with pytest.raises(ValueError, match=r"weight of shape \(4,\) does not fit 3 classes"):
        sd.CrossEntropyLoss(torch.ones(4))(torch.randn(2, 3), torch.tensor([0, 1]))
    criterion = sd.CrossEntropyLoss(reduction="none")
    criterion(torch.randn(2, 3), torch.tensor([0, 1]))
    with pytest.raises(BackwardError, match=r"grad_output of shape \(3,\)"):
        criterion.backward(torch.ones(3))
