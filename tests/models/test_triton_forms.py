"""Whole models through the Triton kernels (run by Triton's interpreter on CPU tensors, as the
op tests do): the loss and every weight's gradient equal the PyTorch forms', in float32 and
under bf16 autocast, and cached decoding through the kernels equals the full forward pass. The
op tests check each kernel alone; this checks what the layers hand them (dtypes under
autocast, the complex and planar outputs, decoding one token at a time)."""

from __future__ import annotations

import pytest
import torch

from hololm.layers import set_backend
from hololm.ops import triton_kernels
from tests.helpers import assert_close
from tests.models.conftest import tiny_model
from tests.models.helpers import ids, prefill_then_decode

pytestmark = pytest.mark.skipif(
    not triton_kernels.importable() or not triton_kernels.interpreted(),
    reason="needs triton, run through its interpreter (TRITON_INTERPRET=1, tests/conftest.py)")


def _loss_and_grads(model, x, autocast: bool):
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(x, labels=x).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                           if p.grad is not None}


@pytest.mark.parametrize("family", ["holo", "long"])
@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16"])
def test_model_through_triton_equals_pytorch_forms(family, autocast):
    torch.manual_seed(0)
    model = tiny_model(family, hybrid=True).train()
    x = ids(2, 70)
    loss, grads = _loss_and_grads(set_backend(model, "torch"), x, autocast)
    loss_t, grads_t = _loss_and_grads(set_backend(model, "triton"), x, autocast)
    tol = 1e-2 if autocast else 1e-5  # bf16 matmuls round differently behind other roundings
    assert_close(loss_t, loss, tol, "loss")
    for name, grad in grads.items():
        assert_close(grads_t[name], grad, tol if autocast else 1e-4, name)


@pytest.mark.parametrize("family", ["holo", "long"])
def test_cached_decoding_through_triton_equals_full_forward(family):
    torch.manual_seed(0)
    model = set_backend(tiny_model(family, hybrid=False), "triton")
    x = ids(2, 24)
    with torch.no_grad():
        full = model(x).logits
        decoded = prefill_then_decode(model, x, prompt=15, chunk=7)
    assert_close(decoded, full[:, 15:], 1e-5, "decoded logits")
