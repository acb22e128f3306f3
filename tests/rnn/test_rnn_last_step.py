"""LastStep, and the row-by-row image classifier built from registered layers in a Sequential:
``Flatten(1, -2) -> LSTM(batch_first=True) -> LastStep -> Linear`` against the same network in
torch.nn (the model mnist-cli trains)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from rnn_reference import DTYPES, leaf

import scidevnn
from scidevnn.plugins import get_layer
from scidevnn.testing import assert_close
from scidevnn_rnn import GRU, LSTM, RNN, LastStep


class TorchRowClassifier(torch.nn.Module):
    """torch.nn's version: rows of the image as steps, the last layer's final state, linear."""

    def __init__(self, recurrent: torch.nn.Module, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.recurrent = recurrent
        self.linear = linear

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        _, states = self.recurrent(images.flatten(1, -2))
        h_n = states[0] if isinstance(states, tuple) else states
        last = h_n[-1] if not self.recurrent.bidirectional else torch.cat((h_n[-2], h_n[-1]), 1)
        out: torch.Tensor = self.linear(last)
        return out


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("image_shape", [(1, 7, 6), (7, 6)], ids=["N1HW", "NHW"])
@pytest.mark.parametrize(
    ("name", "options"),
    [("LSTM", {}), ("LSTM", {"num_layers": 2}), ("GRU", {"bidirectional": True}), ("RNN", {})],
    ids=["lstm", "lstm-2-layers", "gru-bi", "rnn"],
)
def test_row_classifier_matches_torch(
    name: str, options: dict[str, Any], image_shape: tuple[int, ...], dtype: torch.dtype
) -> None:
    recurrent = get_layer(name)(6, 5, batch_first=True, dtype=dtype, **options)
    features = 5 * recurrent.num_directions
    model = scidevnn.Sequential(
        scidevnn.Flatten(1, -2),
        recurrent,
        get_layer("LastStep")(),
        scidevnn.Linear(features, 3, dtype=dtype),
    )
    torch_recurrent = getattr(torch.nn, name)(6, 5, batch_first=True, dtype=dtype, **options)
    reference = TorchRowClassifier(torch_recurrent, torch.nn.Linear(features, 3, dtype=dtype))
    reference.load_state_dict(
        {
            key.replace("1.", "recurrent.", 1).replace("3.", "linear.", 1): value
            for key, value in model.state_dict().items()
        }
    )
    images = torch.rand(4, *image_shape, dtype=dtype)
    images_ref = leaf(images)
    logits_ref = reference(images_ref)
    logits = model(images)
    assert_close(logits, logits_ref.detach(), "logits")
    grad = torch.randn_like(logits)
    logits_ref.backward(grad)
    grad_images = model.backward(grad)
    assert_close(grad_images, images_ref.grad, "image gradient")
    torch_params = dict(reference.named_parameters())
    for key, param in model.named_parameters():
        torch_key = key.replace("1.", "recurrent.", 1).replace("3.", "linear.", 1)
        assert_close(param.grad, torch_params[torch_key].grad, f"{key}.grad")
    model.needs_input_grad = False
    model(images)
    assert model.backward(grad) is None


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("layer_cls", [LSTM, GRU, RNN])
def test_last_step_selects_the_final_state(layer_cls: type[Any], bidirectional: bool) -> None:
    layer = layer_cls(3, 4, num_layers=2, bidirectional=bidirectional, dtype=torch.float64)
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    select = LastStep()

    def reference(x: torch.Tensor) -> torch.Tensor:
        torch_layer = getattr(torch.nn, layer_cls.__name__)(
            3, 4, num_layers=2, bidirectional=bidirectional, dtype=torch.float64
        )
        torch_layer.load_state_dict(layer.state_dict())
        _, states = torch_layer(x)
        h_n = states[0] if isinstance(states, tuple) else states
        return torch.cat((h_n[-2], h_n[-1]), dim=1) if bidirectional else h_n[-1]

    with scidevnn.no_grad():
        pair = layer(x)
    out = select(pair)
    assert_close(out, reference(x).detach(), "LastStep output")
    grad_h = select.backward(torch.ones_like(out))[1]
    grad_h = grad_h[0] if isinstance(grad_h, tuple) else grad_h
    directions = 2 if bidirectional else 1
    assert grad_h.shape == (2 * directions, 2, 4)
    assert not grad_h[:-directions].any() and bool((grad_h[-directions:] == 1).all())


def test_last_step_with_lengths_is_each_sequences_own_last_state() -> None:
    layer = LSTM(3, 4)
    x = torch.randn(5, 2, 3)
    with scidevnn.no_grad():
        output, states = layer(x, None, [2, 5])
    last = LastStep()((output, states))
    assert torch.equal(last[0], output[1, 0])
    assert torch.equal(last[1], output[4, 1])


def test_last_step_unbatched_and_errors() -> None:
    layer = GRU(3, 4, bidirectional=True)
    with scidevnn.no_grad():
        pair = layer(torch.randn(5, 3))
    assert LastStep()(pair).shape == (8,)
    with pytest.raises(ValueError, match="LastStep: expected the"):
        LastStep()(torch.randn(5, 4))
    with pytest.raises(ValueError, match="does not match h_n"):
        LastStep()((torch.randn(5, 2, 12), torch.randn(1, 2, 5)))
