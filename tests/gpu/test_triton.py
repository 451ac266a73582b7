"""The Triton kernels on a GPU (skipped without one): each equals the eager PyTorch form it
replaces on CUDA, at a length that spans many tiles, outputs and gradients. (On CPU hololm's
own kernels run through Triton's interpreter in tests/ops, on every op test; fla's kernels
cannot, so the fla path of the matrix memory is tested here only.)"""

from __future__ import annotations

import math

import pytest
import torch

from hololm.ops import gated_delta_rule, gated_matrix_memory, generate_random_phasors, phasor_memory
from hololm.ops.delta_rule import fla_form as fla_delta_rule
from hololm.ops.matrix_memory import fla_form as fla_matrix_memory
from hololm.ops.phasor import phasor_memory_parts
from tests.helpers import assert_close, by_backend

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("resets", [False, True], ids=["plain", "resets"])
@pytest.mark.parametrize("fn", [phasor_memory, phasor_memory_parts], ids=["complex", "planar"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_phasor_triton_equals_eager_on_gpu(fn, dtype, resets):
    B, T, H, D = 2, 8192 + 3, 4, 40
    gen = torch.Generator().manual_seed(0)
    reset = None
    if resets:  # packed documents: ~1 in 300 tokens starts one, and t = 0, 63, 64 of row 0
        reset = torch.rand(B, T, generator=gen) < 1 / 300
        reset[0, [0, 63, 64]] = True
        reset = reset.cuda()
    v = torch.randn(B, T, H, D, generator=gen)
    phases = math.pi * torch.tanh(torch.randn(2, B, T, H, D, generator=gen))
    shift = 3 * torch.randn(H, generator=gen)
    m0 = torch.randn(B, H, D, dtype=torch.complex64, generator=gen)
    freqs = generate_random_phasors(H * D, seed=1)

    def compute(backend, threads):
        leaves = [x.to("cuda", dtype if x.is_floating_point() and x.dim() == 4 else x.dtype)
                  .requires_grad_() for x in (v, phases[0], phases[1], shift, m0)]
        out, state = fn(*leaves[:3], freqs, offset=7, query_shift=leaves[3],
                        initial_state=leaves[4], reset=reset, backend=backend)
        loss = (torch.view_as_real(out) if out.is_complex() else out).sin().sum()
        loss = loss + torch.view_as_real(state).cos().sum()
        return (out, state, *torch.autograd.grad(loss, leaves))

    forms = by_backend(compute, "triton")
    eager, fused = forms["torch"], forms["triton"]
    for name, a, b in zip(("out", "state", "d_v", "d_phi", "d_psi", "d_shift", "d_m0"), fused,
                          eager, strict=True):
        # bf16 gradients: two float32 results ~1e-6 apart round to different bf16 values
        tol = 1e-5 if dtype == torch.float32 else 1e-3
        assert_close(a.cpu(), b.cpu(), tol if name != "d_shift" else 10 * tol, name)


@pytest.mark.skipif(not fla_matrix_memory.available(),
                    reason="flash-linear-attention is not installed")
def test_matrix_memory_through_fla_equals_eager_on_gpu():
    """bf16 q, k, v (the autocast case) go through fla; float32 ones never do."""
    dtype = torch.bfloat16
    B, T, H, D = 2, 8192 + 3, 4, 64
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, T, H, D, generator=gen) / D**0.25 for _ in range(3))
    log_forget = torch.nn.functional.logsigmoid(torch.randn(B, T, H, generator=gen) + 4)
    write = torch.rand(B, T, H, generator=gen)
    state = torch.randn(B, H, D, D, generator=gen)

    def compute(backend, threads):
        leaves = [x.to("cuda", dtype if x.dim() == 4 and x.shape[1] == T else torch.float32)
                  .requires_grad_() for x in (q, k, v, log_forget, write, state)]
        y, final = gated_matrix_memory(*leaves[:5], initial_state=leaves[5], backend=backend)
        loss = y.float().sin().sum() + final.cos().sum()
        return (y, final, *torch.autograd.grad(loss, leaves))

    forms = by_backend(compute, "fla")
    eager, fla = forms["torch"], forms["fla"]
    tol = 2e-2  # fla keeps its chunk states in bf16 (fla_matrix_memory.py)
    for name, a, b in zip(("y", "state", "d_q", "d_k", "d_v", "d_log_forget", "d_write",
                           "d_state"), fla, eager, strict=True):
        assert_close(a.cpu(), b.cpu(), tol, name)
    q32 = q.to("cuda")
    assert not fla_matrix_memory.applies(q32, q32, q32, read_before_write=False)


@pytest.mark.skipif(not fla_delta_rule.available(),
                    reason="flash-linear-attention is not installed")
def test_delta_rule_through_fla_equals_eager_on_gpu():
    """bf16 q, k, v (the autocast case) through fla's gated delta rule against hololm's chunked
    form on the same inputs: outputs, state and every gradient."""
    dtype = torch.bfloat16
    B, T, H, D = 2, 4096 + 3, 4, 64
    gen = torch.Generator().manual_seed(0)
    q, k = (torch.nn.functional.normalize(torch.randn(B, T, H, D, generator=gen), dim=-1)
            for _ in range(2))
    v = torch.randn(B, T, H, D, generator=gen)
    beta = torch.rand(B, T, H, generator=gen)
    log_forget = torch.nn.functional.logsigmoid(torch.randn(B, T, H, generator=gen) + 4)
    state = torch.randn(B, H, D, D, generator=gen) * 0.1

    def compute(backend, threads):
        leaves = [x.to("cuda", dtype if x.dim() == 4 and x.shape[1] == T else torch.float32)
                  .requires_grad_() for x in (q, k, v, beta, log_forget, state)]
        y, final = gated_delta_rule(*leaves[:5], initial_state=leaves[5], backend=backend)
        loss = y.float().sin().sum() + final.cos().sum()
        return (y, final, *torch.autograd.grad(loss, leaves))

    forms = by_backend(compute, "fla")
    eager, fla = forms["torch"], forms["fla"]
    tol = 2e-2  # fla keeps its chunk states in bf16 (delta_rule/fla_form.py)
    for name, a, b in zip(("y", "state", "d_q", "d_k", "d_v", "d_beta", "d_log_forget",
                           "d_state"), fla, eager, strict=True):
        assert_close(a.cpu(), b.cpu(), tol, name)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_kernels_run_on_their_inputs_device():
    """Inputs on cuda:1 while cuda:0 is current: the kernels launch on cuda:1."""
    from hololm.ops import gated_diagonal_scan

    gen = torch.Generator().manual_seed(0)
    v, phi, psi = (torch.randn(2, 300, 2, 16, generator=gen) for _ in range(3))
    log_decay = -torch.rand(2, 300, 2, 16, generator=gen)

    def compute(backend, threads):
        leaves = [x.to("cuda:1").requires_grad_() for x in (v, phi, psi, log_decay)]
        with torch.cuda.device(0):
            r, _ = phasor_memory(*leaves[:3], generate_random_phasors(32, seed=2), backend=backend)
            h, _ = gated_diagonal_scan(leaves[0], leaves[3], backend=backend)
            loss = torch.view_as_real(r).sin().sum() + h.cos().sum()
            return (r, h, *torch.autograd.grad(loss, leaves))

    forms = by_backend(compute, "triton")
    eager, fused = forms["torch"], forms["triton"]
    for a, b in zip(fused, eager, strict=True):
        assert_close(a.cpu(), b.cpu(), 1e-5, "on cuda:1")
