"""The fla path of the matrix memory maps hololm's memory onto fla's simple GLA correctly
(gate, layout, write gate, no query scaling, initial and final state). fla's Triton kernels need
a GPU (tests/gpu/test_triton.py); here the adapter calls fla's own PyTorch reference of the
same function instead, so what is checked is the mapping."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hololm.ops import holo_scan
from hololm.ops.matrix_memory import fla_form as fla_matrix_memory
from tests.helpers import assert_close

simple_gla = pytest.importorskip("fla.ops.simple_gla")
naive = pytest.importorskip("fla.ops.simple_gla.naive")


@pytest.mark.parametrize("steps", [1, 70, 131])
@pytest.mark.parametrize("gated_write", [True, False])
def test_fla_adapter_computes_our_memory(steps, gated_write, monkeypatch):
    monkeypatch.setattr(simple_gla, "chunk_simple_gla", naive.naive_chunk_simple_gla)
    B, H, Dk, Dv = 2, 3, 8, 5
    q, k = torch.randn(B, steps, H, Dk), torch.randn(B, steps, H, Dk)
    v = torch.randn(B, steps, H, Dv)
    log_forget = F.logsigmoid(torch.randn(B, steps, H) + 2)
    write = torch.rand(B, steps, H) if gated_write else None
    state = torch.randn(B, H, Dk, Dv)
    y, final = fla_matrix_memory.gated_matrix_memory_fla(q, k, v, log_forget, write, state)
    y_ref, final_ref = holo_scan(q, k, v, log_forget, write, initial_state=state)
    assert y.dtype == final.dtype == torch.float32
    assert_close(y, y_ref, 1e-5, "y")
    assert_close(final, final_ref, 1e-5, "final state")


def test_fla_path_is_taken_on_cuda_only(monkeypatch):
    """On CPU tensors gated_matrix_memory never calls fla (its kernels need a GPU)."""
    def fail(*args, **kwargs):
        raise AssertionError("fla called for CPU tensors")

    monkeypatch.setattr(fla_matrix_memory, "gated_matrix_memory_fla", fail)
    from hololm.ops import gated_matrix_memory

    q = torch.randn(1, 5, 2, 4)
    gated_matrix_memory(q, q, q, torch.zeros(1, 5, 2))
