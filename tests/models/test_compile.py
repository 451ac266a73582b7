"""torch.compile leaves every family's results unchanged: the fast forms built on custom autograd
Functions run eagerly inside the compiled model (hololm/ops/__init__.py). Without that, a
compiled holo model returned a NaN loss. The tests trace with dynamo and AOT autograd, where that
failure lived, on the aot_eager backend: inductor's code generation would add a minute on CI."""

from __future__ import annotations

import pytest
import torch

from hololm.models.presets import build_model
from tests.helpers import assert_close


def _loss_and_grads(model: torch.nn.Module, ids: torch.Tensor):
    model.zero_grad()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("model_type", ["holo", "long", "hologpt", "hsn"])
def test_compiled_model_matches_eager(model_type):
    torch.manual_seed(0)
    model = build_model(model_type, "tiny", vocab_size=64, seq_len=48,
                        **({} if model_type == "hsn" else {"num_hidden_layers": 1}))
    ids = torch.randint(0, 64, (2, 48))
    loss, grads = _loss_and_grads(model, ids)
    model.compile(backend="aot_eager")
    loss_c, grads_c = _loss_and_grads(model, ids)
    assert torch.isfinite(loss_c)
    assert_close(loss_c, loss, 1e-5, f"{model_type} compiled loss")
    assert len(grads_c) == len(grads)
    for g_c, g in zip(grads_c, grads, strict=True):
        assert_close(g_c, g, 1e-4, f"{model_type} compiled grad")
