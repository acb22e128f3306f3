"""SyncBatchNorm: equal to torch's BatchNorm2d on the whole batch, split over two workers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from distributed_workers import (
    BATCHNORM_SPLIT,
    batchnorm_data,
    cnn_worker,
    reference_cnn,
)

import scidevnn
from scidevnn import distributed as sdist
from scidevnn.plugins import get_layer
from scidevnn_cnn.sync_batchnorm import SyncBatchNorm, convert_sync_batchnorm

WORLD, GLOBAL_BATCH, EPOCHS = 2, 16, 2


def tolerance(dtype: torch.dtype) -> float:
    return 1e-5 if dtype == torch.float32 else 1e-10


def assert_close(
    ours: torch.Tensor | None, theirs: torch.Tensor | None, what: str, atol: float
) -> None:
    assert ours is not None and theirs is not None, what
    difference = (ours - theirs.detach()).abs().max().item()
    assert difference <= atol * max(1.0, theirs.abs().max().item()), f"{what}: {difference:.3g}"


def test_two_workers_match_torch_batchnorm_and_one_process_cnn(tmp_path: Path) -> None:
    sdist.spawn(cnn_worker, WORLD, str(tmp_path), GLOBAL_BATCH, EPOCHS, timeout=60)
    for dtype in (torch.float32, torch.float64):
        atol = tolerance(dtype)
        x, g = batchnorm_data(dtype)
        reference = torch.nn.BatchNorm2d(3, dtype=dtype)
        with torch.no_grad():
            reference.weight.copy_(torch.tensor([0.5, 1.0, 2.0]))
            reference.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
        expected = []
        for step in range(3):  # the whole batch of 8 in one process
            reference.train(step < 2)
            inputs = (x * (step + 1)).requires_grad_()
            output = reference(inputs)
            output.backward(g)
            expected.append((output, inputs.grad))
        states = [torch.load(tmp_path / f"syncbn-{dtype}-{rank}.pt") for rank in range(WORLD)]
        for rank, state in enumerate(states):
            part = BATCHNORM_SPLIT[rank]  # 3 samples on worker 0, 5 on worker 1
            for step, (output, grad) in enumerate(expected):
                assert_close(state["outputs"][2 * step], output[part], f"output {step}", atol)
                assert grad is not None
                assert_close(state["outputs"][2 * step + 1], grad[part], f"dx {step}", atol)
            theirs = [reference.running_mean, reference.running_var, reference.num_batches_tracked]
            for index, buffer in enumerate(theirs):
                assert_close(state["buffers"][index], buffer, f"buffer {index}", atol)
        for index, param in enumerate((reference.weight, reference.bias)):
            assert param.grad is not None
            summed = states[0]["grads"][index] + states[1]["grads"][index]  # what DDP averages
            assert_close(summed, param.grad, f"parameter {index} gradient", atol)

    for dtype, cnn_atol in ((torch.float32, 1e-6), (torch.float64, 1e-10)):
        expected_state = reference_cnn(WORLD, GLOBAL_BATCH, EPOCHS, dtype)
        start = reference_cnn(WORLD, GLOBAL_BATCH, 0, dtype)
        for rank in range(WORLD):
            state = torch.load(tmp_path / f"cnn-{dtype}-{rank}.pt")
            assert state.keys() == expected_state.keys()
            for key, value in expected_state.items():
                difference = (state[key].double() - value.double()).abs().max().item()
                assert difference <= cnn_atol, f"cnn {dtype} rank {rank} {key}: {difference:.3g}"
                if value.is_floating_point() and key != "0.bias":  # BN cancels the conv's bias
                    assert not torch.equal(value, start[key]), key  # training moved it


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(4, 3, 5, 6), (2, 3), (1, 3, 7), (5, 3, 2, 2, 3)])
@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("affine", [True, False])
def test_without_a_process_group_it_is_batchnorm(
    dtype: torch.dtype, shape: tuple[int, ...], momentum: float | None, affine: bool
) -> None:
    """Training (twice) then eval, against torch's BatchNorm1d/2d/3d for that input rank."""
    torch.manual_seed(0)
    ours = SyncBatchNorm(3, momentum=momentum, affine=affine, dtype=dtype)
    reference_cls = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d}
    cls = reference_cls.get(len(shape), torch.nn.BatchNorm3d)
    reference = cls(3, momentum=momentum, affine=affine, dtype=dtype)
    if affine:
        with torch.no_grad():
            reference.weight.uniform_(0.5, 2.0)
            reference.bias.uniform_(-1.0, 1.0)
    ours.load_state_dict(reference.state_dict())
    atol = tolerance(dtype)
    for step, training in enumerate((True, True, False)):
        ours.train(training)
        reference.train(training)
        x = torch.randn(shape, dtype=dtype) * 4 + 20
        g = torch.randn(shape, dtype=dtype)
        inputs = x.clone().requires_grad_()
        expected = reference(inputs)
        expected.backward(g)
        assert_close(ours(x), expected, f"output {step}", atol)
        assert inputs.grad is not None
        assert_close(ours.backward(g), inputs.grad, f"dx {step}", atol)
    for name, value in reference.state_dict().items():
        assert_close(ours.state_dict()[name].to(value.dtype), value, name, atol)
    if affine:
        for (name, param), theirs in zip(
            ours.named_parameters(), reference.parameters(), strict=True
        ):
            assert param.grad is not None and theirs.grad is not None
            assert_close(param.grad, theirs.grad, f"{name} gradient", atol)


@pytest.mark.parametrize("shape", [(1, 3, 1, 1), (1, 3)])
def test_training_on_one_value_per_channel_is_torchs_error(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"(?i)more than 1 value per channel"):
        torch.nn.SyncBatchNorm(3)(torch.randn(shape))
    layer = SyncBatchNorm(3)
    with pytest.raises(ValueError, match=r"(?i)more than 1 value per channel"):
        layer(torch.randn(shape))


def test_bad_input_shape_names_the_layer_and_shape() -> None:
    layer = SyncBatchNorm(3)
    with pytest.raises(ValueError, match=r"SyncBatchNorm\(3\).*\(2, 4, 5\)"):
        layer(torch.randn(2, 4, 5))


def test_skips_the_input_gradient_when_not_needed() -> None:
    layer = SyncBatchNorm(2)
    layer.needs_input_grad = False
    layer(torch.randn(4, 2, 3, 3))
    assert layer.backward(torch.randn(4, 2, 3, 3)) is None
    assert layer.weight is not None and layer.weight.grad is not None


def test_convert_replaces_batchnorm_and_shares_its_state() -> None:
    batchnorm = get_layer("BatchNorm2d")
    inner = batchnorm(4, momentum=None, eps=1e-3)
    inner.eval()
    model = scidevnn.Sequential(batchnorm(2), scidevnn.Sequential(inner, scidevnn.Linear(3, 3)))
    params_before = [id(p) for p in model.parameters()]
    state_before = {key: value.clone() for key, value in model.state_dict().items()}
    converted = convert_sync_batchnorm(model)
    assert converted is model
    assert isinstance(model[0], SyncBatchNorm)
    nested = model[1]
    assert isinstance(nested, scidevnn.Sequential)
    sync_inner = nested[0]
    assert isinstance(sync_inner, SyncBatchNorm) and not sync_inner.training
    assert (sync_inner.momentum, sync_inner.eps) == (None, 1e-3)
    assert [id(p) for p in model.parameters()] == params_before  # same Parameter objects
    assert sync_inner.running_mean is inner.running_mean
    assert model.state_dict().keys() == state_before.keys()
    assert SyncBatchNorm.convert_sync_batchnorm(batchnorm(3)).get_config() == {
        "num_features": 3,
        "eps": 1e-5,
        "momentum": 0.1,
        "affine": True,
        "track_running_stats": True,
    }


def test_state_dict_matches_torch_sync_batchnorm() -> None:
    theirs = torch.nn.SyncBatchNorm(5)
    ours = SyncBatchNorm(5)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())


def test_saves_and_loads_through_the_model_file(tmp_path: Path) -> None:
    model = scidevnn.Sequential(SyncBatchNorm(3, momentum=None, eps=1e-4), scidevnn.Linear(2, 2))
    model(torch.randn(4, 3, 2))  # running statistics move
    scidevnn.save_model(model, tmp_path / "sync.h5")
    loaded = scidevnn.load_model(tmp_path / "sync.h5")
    layer = loaded[0]  # type: ignore[index]
    assert isinstance(layer, SyncBatchNorm)
    assert (layer.momentum, layer.eps) == (None, 1e-4)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
