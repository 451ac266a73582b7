"""The three forms of the gated diagonal scan agree (outputs, final state, gradients) for any decay
strength, with bf16 inputs, over long sequences, token by token, causally, and with resets (the
state dropped at packed documents' starts)."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from hololm.ops.diagonal_scan import (
    cpu_form,
    gated_diagonal_scan,
    gated_diagonal_scan_ref,
    gated_diagonal_scan_step,
)
from tests.helpers import assert_close, by_backend

B, H, D = 2, 4, 8


BACKENDS = ("cpu", "torch", "triton")  # a test taking `backend` runs on each (conftest.py)
KERNEL = cpu_form.KERNEL
TRITON = pytest.mark.parametrize("backend", ["triton"], indirect=True)


def scan_on(backend: str):
    """`gated_diagonal_scan` on `backend`."""
    return partial(gated_diagonal_scan, backend=backend)


def _inputs(T: int, dtype: torch.dtype = torch.float32, shape: tuple[int, int, int] = (B, H, D)):
    """x [B, T, H, D]; log_decay = logsigmoid(...) whose per-head mean decays run from 0.5 to
    0.9999 (memory time scales 2 to 10^4 steps, spaced geometrically), jittered per token and
    channel as the layer's decay projection does; a float32 state [B, H, D]."""
    b, h, d = shape
    mean = 1 - torch.logspace(math.log10(0.5), -4, h, dtype=torch.float64)
    logit = torch.log(mean / (1 - mean)).view(1, 1, h, 1)
    log_decay = F.logsigmoid(logit + 0.3 * torch.randn(b, T, h, d, dtype=torch.float64))
    x = torch.randn(b, T, h, d, dtype=torch.float64)
    return x.to(dtype), log_decay.to(dtype), torch.randn(b, h, d)


def _f64(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tuple(t.double() for t in tensors)


def _outputs_and_grads(fn, x, log_decay, state, **kwargs):
    """(h, final state, ∂L/∂x, ∂L/∂log_decay, ∂L/∂state) for a random linear loss of h and the
    final state, so that every output and every input is checked."""
    x, log_decay, state = (t.detach().requires_grad_() for t in (x, log_decay, state))
    h, final = fn(x, log_decay, state, **kwargs)
    gen = torch.Generator().manual_seed(1)
    w_h, w_final = (torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.dtype)
                    for t in (h, final))
    loss = (h * w_h).sum() + (final * w_final).sum()
    return (h, final, *torch.autograd.grad(loss, (x, log_decay, state)))


NAMES = ("h", "final state", "grad x", "grad log_decay", "grad initial_state")


def _assert_all_close(got, want, tol: float, label: str = "") -> None:
    for name, a, b in zip(NAMES, got, want, strict=True):
        assert_close(a, b, tol, f"{label} {name}")


@pytest.mark.parametrize("T", [1, 2, 63, 64, 65, 257])
@pytest.mark.parametrize("chunk_size", [4, 16, 64])
def test_fast_matches_reference(T, chunk_size, backend):
    if backend == "triton" and chunk_size != 16:
        pytest.skip("chunk_size sets the PyTorch form's chunks only (and Triton's interpreter "
                    "is slow)")
    x, log_decay, state = _inputs(T)
    want = _outputs_and_grads(gated_diagonal_scan_ref, *_f64(x, log_decay, state))
    got = _outputs_and_grads(scan_on(backend), x, log_decay, state,
                             chunk_size=chunk_size)
    assert got[0].dtype == got[1].dtype == torch.float32
    _assert_all_close(got, want, 1e-5, f"T={T} C={chunk_size}")


@pytest.mark.parametrize("chunk_size", [2, 7, 64, 1000])
def test_float64_agrees_to_rounding(chunk_size):
    x, log_decay, state = _inputs(100)
    want = _outputs_and_grads(gated_diagonal_scan_ref, *_f64(x, log_decay, state))
    got = _outputs_and_grads(gated_diagonal_scan, *_f64(x, log_decay, state),
                             chunk_size=chunk_size)
    assert got[0].dtype == torch.float64
    _assert_all_close(got, want, 1e-12, f"C={chunk_size}")


def _clamped_whole_sequence_scan(x, log_decay):
    """The seed's approach: h_t = exp(G_t) Σ_{s<=t} exp(-G_s) x_s with G the cumsum of log γ
    over the whole sequence, clamped to ±50 to avoid overflow."""
    G = log_decay.cumsum(1).clamp(-50, 50)
    return G.exp() * (torch.exp(-G) * x).cumsum(1)


def test_strong_decays_are_exact(backend):
    # log γ = -60 wipes the state in one step; mixed with channels that keep it (γ ~ 0.9999)
    x, log_decay, state = _inputs(130)
    strong = torch.rand(log_decay.shape) < 0.3
    log_decay = torch.where(strong, torch.full_like(log_decay, -60.0), log_decay)
    log_decay[:, 40:45, 0] = -1e4
    want = _outputs_and_grads(gated_diagonal_scan_ref, *_f64(x, log_decay, state))
    got = _outputs_and_grads(scan_on(backend), x, log_decay, state, chunk_size=16)
    assert all(torch.isfinite(g).all() for g in got)
    _assert_all_close(got, want, 1e-5, "strong decays")
    # the inputs do break the clamped approach: this test can tell exact from approximate
    clamped = _clamped_whole_sequence_scan(x.double(), log_decay.double())
    zero_state_ref = gated_diagonal_scan_ref(x.double(), log_decay.double())[0]
    assert not torch.allclose(clamped, zero_state_ref, rtol=0.1, atol=0.1)


def test_every_step_strong(backend):
    # γ = exp(-60) ≈ 9e-27 every step: in float32 each state is exactly its own input
    x, _, state = _inputs(70)
    h, final = gated_diagonal_scan(x, torch.full_like(x, -60.0), state, chunk_size=8,
                                   backend=backend)
    assert torch.equal(h, x)
    assert torch.equal(final, x[:, -1])


@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
def test_half_inputs(half, backend):
    # half inputs are computed in float32: compare with the float64 reference on the same
    # (rounded) inputs. Gradients come back in the input dtype, so they carry its rounding.
    x, log_decay, state = _inputs(65, half)
    want = _outputs_and_grads(gated_diagonal_scan_ref, *_f64(x, log_decay, state))
    got = _outputs_and_grads(scan_on(backend), x, log_decay, state, chunk_size=16)
    assert got[0].dtype == got[1].dtype == torch.float32
    assert got[2].dtype == got[3].dtype == half
    for name, a, b, tol in zip(NAMES, got, want, (1e-5, 1e-5, 1e-2, 1e-2, 1e-5), strict=True):
        assert_close(a, b, tol, f"{half} {name}")


def test_long_sequence_is_stable(backend):
    # decays near 1 keep ~10^4 steps in memory; T = 100_000 crosses three recursion levels
    # (of 16-step chunks), and 64·64 + 5 those of the Triton kernel's 64-step chunks (Triton's
    # interpreter takes ~80 µs per element scanned: 100_000 steps would take minutes)
    T = 64 * 64 + 5 if backend == "triton" else 100_000
    x = torch.randn(1, T, 2, 2)
    log_decay = torch.log(0.999 + 0.0009 * torch.rand(1, T, 2, 2))
    state = torch.randn(1, 2, 2)
    with torch.no_grad():
        h_ref, final_ref = gated_diagonal_scan_ref(*_f64(x, log_decay, state))
    got = _outputs_and_grads(scan_on(backend), x, log_decay, state)
    wide = _outputs_and_grads(gated_diagonal_scan, *_f64(x, log_decay, state))
    assert all(torch.isfinite(g).all() for g in got)
    assert_close(wide[0], h_ref, 1e-12, "float64 h")
    assert_close(wide[1], final_ref, 1e-12, "float64 final state")
    _assert_all_close(got, wide, 1e-5, "float32 vs float64")


def test_step_chain_equals_full(backend):
    x, log_decay, state = _inputs(20)
    h_full, final_full = gated_diagonal_scan(x, log_decay, state, chunk_size=4, backend=backend)
    s = state
    for t in range(20):
        h_t, s = gated_diagonal_scan_step(x[:, t], log_decay[:, t], s)
        assert_close(h_t, h_full[:, t], 1e-6, f"h at t={t}")
    assert_close(s, final_full, 1e-6, "final state")


def test_prefix_then_steps_equals_full(backend):
    x, log_decay, _ = _inputs(40)
    h_full, final_full = gated_diagonal_scan(x, log_decay, chunk_size=8, backend=backend)
    h, s = gated_diagonal_scan(x[:, :27], log_decay[:, :27], chunk_size=8, backend=backend)
    assert_close(h, h_full[:, :27], 1e-6, "prefix h")
    for t in range(27, 40):
        h_t, s = gated_diagonal_scan_step(x[:, t], log_decay[:, t], s)
        assert_close(h_t, h_full[:, t], 1e-6, f"h at t={t}")
    assert_close(s, final_full, 1e-6, "final state")


def test_step_gradients_match_reference(backend):
    x, log_decay, state = _inputs(1)
    want = _outputs_and_grads(gated_diagonal_scan_ref, *_f64(x, log_decay, state))

    def one_step(x, log_decay, state):
        h, new_state = gated_diagonal_scan_step(x[:, 0], log_decay[:, 0], state)
        return h[:, None], new_state

    got = _outputs_and_grads(one_step, x, log_decay, state)
    _assert_all_close(got, want, 1e-6, "step")


@pytest.mark.parametrize("t", [0, 15, 16, 40])
def test_causal(t, backend):
    x, log_decay, state = _inputs(50)
    h, _ = gated_diagonal_scan(x, log_decay, state, chunk_size=16, backend=backend)
    x2, log_decay2 = x.clone(), log_decay.clone()
    x2[:, t + 1:] += torch.randn_like(x2[:, t + 1:])
    log_decay2[:, t + 1:] = -30.0
    h2, _ = gated_diagonal_scan(x2, log_decay2, state, chunk_size=16, backend=backend)
    assert torch.equal(h[:, :t + 1], h2[:, :t + 1])
    assert not torch.equal(h[:, t + 1:], h2[:, t + 1:])


def test_gradcheck():
    x, log_decay, state = _inputs(9)
    x, log_decay, state = (t.double().requires_grad_() for t in
                           (x[:1, :, :1, :2], log_decay[:1, :, :1, :2], state[:1, :1, :2]))
    assert torch.autograd.gradcheck(lambda *a: gated_diagonal_scan(*a, chunk_size=2),
                                    (x, log_decay, state))


def test_non_contiguous_inputs_and_expanded_gradient():
    x, log_decay, _ = _f64(*_inputs(9))
    x_t = x.transpose(1, 2).contiguous().transpose(1, 2).requires_grad_()  # [B, H, T, D] storage
    h, final = gated_diagonal_scan(x_t, log_decay.transpose(1, 2).contiguous().transpose(1, 2),
                                   chunk_size=4)
    (h.sum() + final.sum()).backward()  # the upstream gradient of a sum is an expanded tensor
    x_r = x.clone().requires_grad_()
    h_ref, final_ref = gated_diagonal_scan_ref(x_r, log_decay)
    (h_ref.sum() + final_ref.sum()).backward()
    assert_close(h, h_ref, 1e-12, "h")
    assert_close(x_t.grad, x_r.grad, 1e-12, "grad x")


# resets per row of two, as lists of steps: at t = 0, mid-chunk, on the 16-step chunks' and the
# Triton kernel's 64-step chunks' boundaries (and one past), consecutive, and the last step
RESETS = {"t=0": ([0], [0, 1]),
          "mid-chunk": ([5, 37], [9]),
          "chunk boundaries": ([16, 32, 64], [15, 48, 65]),
          "consecutive": ([40, 41, 42], [0, 63, 64, 65]),
          "last step": ([65], [66])}


def _reset_mask(T: int, rows: tuple[list[int], list[int]]) -> torch.Tensor:
    """[2, T] bool with the listed steps of each row set."""
    reset = torch.zeros(2, T, dtype=torch.bool)
    for b, steps in enumerate(rows):
        reset[b, [t for t in steps if t < T]] = True
    return reset


@pytest.mark.parametrize("T", [66, 67])
@pytest.mark.parametrize("where", list(RESETS))
def test_resets_match_reference(where, T, backend):
    """Outputs, final state and every gradient (the initial state's included) of each backend
    against the float64 reference, fp32 tight; odd and even lengths."""
    x, log_decay, state = _inputs(T)
    reset = _reset_mask(T, RESETS[where])
    want = _outputs_and_grads(gated_diagonal_scan_ref, *_f64(x, log_decay, state), reset=reset)
    got = _outputs_and_grads(scan_on(backend), x, log_decay, state, chunk_size=16, reset=reset)
    _assert_all_close(got, want, 1e-6, f"{where} T={T}")
    assert not got[3][reset.nonzero(as_tuple=True)].any(), "log_decay's gradient at a reset"
    assert not got[4][reset[:, 0]].any(), "the initial state's gradient under a reset at t=0"


@pytest.mark.parametrize("block_t, T", [(2, 37), (4, 69)])
@TRITON
def test_triton_resets_across_recursion_levels(backend, monkeypatch, block_t, T):
    """Short Triton chunks, so that resets fall on chunk ends of several recursion levels."""
    monkeypatch.setattr(_triton_module(), "BLOCK_T", block_t)
    x, log_decay, state = _inputs(T, shape=(2, 2, 2))
    reset = _reset_mask(T, ([0, 3, 4, 8, 16, 17], [block_t, block_t ** 2, T - 1]))
    want = _outputs_and_grads(gated_diagonal_scan_ref, *_f64(x, log_decay, state), reset=reset)
    got = _outputs_and_grads(scan_on(backend), x, log_decay, state, reset=reset)
    _assert_all_close(got, want, 1e-6, f"T={T} BLOCK_T={block_t}")


def test_reference_resets_equal_segments_alone():
    """The reference with resets equals each segment run by itself, the first from the initial
    state and the others from zero: states, and the gradients of x, log_decay (0 at a reset,
    whose decay is replaced) and the initial state."""
    T, starts = 30, [7, 8, 19]
    x, log_decay, state = _f64(*_inputs(T))
    reset = torch.zeros(B, T, dtype=torch.bool)
    reset[:, starts] = True
    got = _outputs_and_grads(gated_diagonal_scan_ref, x, log_decay, state, reset=reset)

    leaves = [t.detach().requires_grad_() for t in (x, log_decay, state)]
    x_, log_decay_, state_ = leaves
    bounds = [0, *starts, T]
    parts = []
    for i, (t0, t1) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        h0 = state_ if i == 0 else None
        parts.append(gated_diagonal_scan_ref(x_[:, t0:t1], log_decay_[:, t0:t1], h0)[0])
    h = torch.cat(parts, 1)
    gen = torch.Generator().manual_seed(1)
    w_h, w_final = (torch.randn(t.shape, generator=gen, dtype=torch.float64)
                    for t in (h, h[:, -1]))
    loss = (h * w_h).sum() + (h[:, -1] * w_final).sum()
    want = (h, h[:, -1], *torch.autograd.grad(loss, leaves))
    _assert_all_close(got, want, 1e-12, "segments")
    assert not got[3][:, starts].any()


def test_reset_by_log_decay_minus_inf_still_drops_the_state(backend):
    """The other way to reset (a caller's log_decay = −inf) keeps working beside `reset`."""
    x, log_decay, state = _inputs(40)
    log_decay[:, 20] = -math.inf
    reset = torch.zeros(B, 40, dtype=torch.bool)
    reset[:, 20] = True
    h, final = gated_diagonal_scan(x, log_decay, state, chunk_size=16, backend=backend)
    h_reset, final_reset = gated_diagonal_scan(x, log_decay, state, chunk_size=16,
                                               backend=backend, reset=reset)
    h_alone, final_alone = gated_diagonal_scan_ref(x[:, 20:], log_decay[:, 20:])
    assert_close(h[:, 20:], h_alone, 1e-6, "log γ = −inf")
    assert_close(h_reset[:, 20:], h_alone, 1e-6, "reset and log γ = −inf")
    assert_close(final, final_alone, 1e-6, "final state")


def test_step_resets_equal_full(backend):
    """Token by token with each step's reset row equals the whole scan with the mask, and the
    step's gradients equal the reference's."""
    x, log_decay, state = _inputs(20)
    reset = _reset_mask(20, ([0, 5, 6], [13]))
    h_full, final_full = gated_diagonal_scan(x, log_decay, state, chunk_size=4, backend=backend,
                                             reset=reset)
    s = state
    for t in range(20):
        h_t, s = gated_diagonal_scan_step(x[:, t], log_decay[:, t], s, reset=reset[:, t])
        assert_close(h_t, h_full[:, t], 1e-6, f"h at t={t}")
    assert_close(s, final_full, 1e-6, "final state")

    x1, log_decay1, state1 = _inputs(1)
    reset1 = torch.tensor([True, False])
    want = _outputs_and_grads(gated_diagonal_scan_ref, *_f64(x1, log_decay1, state1),
                              reset=reset1[:, None])

    def one_step(x, log_decay, state):
        h, new_state = gated_diagonal_scan_step(x[:, 0], log_decay[:, 0], state, reset=reset1)
        return h[:, None], new_state

    _assert_all_close(_outputs_and_grads(one_step, x1, log_decay1, state1), want, 1e-6, "step")


def _bad_calls():
    x, a, s = torch.zeros(2, 5, 3, 4), torch.zeros(2, 5, 3, 4), torch.zeros(2, 3, 4)
    scan, ref, step = gated_diagonal_scan, gated_diagonal_scan_ref, gated_diagonal_scan_step
    return [
        (scan, (x.numpy(), a), {}, TypeError, "x"),
        (ref, (x.long(), a), {}, TypeError, "x"),
        (scan, (x[0], a[0]), {}, ValueError, "x"),
        (scan, (x, a[:, :4]), {}, ValueError, "log_decay"),
        (ref, (x, a.int()), {}, TypeError, "log_decay"),
        (scan, (x, a, s[:, :2]), {}, ValueError, "initial_state"),
        (ref, (x, a, s.bfloat16()), {}, TypeError, "initial_state"),
        (scan, (x, a, s), {"chunk_size": 0}, ValueError, "chunk_size"),
        (scan, (x, a, s), {"chunk_size": 1}, ValueError, "chunk_size"),
        (scan, (x, a, s), {"chunk_size": 4.0}, ValueError, "chunk_size"),
        (scan, (x[:, :0], a[:, :0]), {}, ValueError, "x"),
        (step, (x, a, s), {}, ValueError, "x"),
        (step, (x[:, 0], a[:, 0, :2]), {}, ValueError, "log_decay"),
        (step, (x[:, 0], a[:, 0], s[:1]), {}, ValueError, "state"),
        (step, (x[:, 0], a[:, 0], s.half()), {}, TypeError, "state"),
        (scan, (x, a), {"reset": torch.zeros(2, 5)}, TypeError, "reset"),
        (ref, (x, a), {"reset": torch.zeros(2, 4, dtype=torch.bool)}, ValueError, "reset"),
        (scan, (x, a), {"reset": [[True] * 5] * 2}, TypeError, "reset"),
        (step, (x[:, 0], a[:, 0]), {"reset": torch.zeros(2, 5, dtype=torch.bool)}, ValueError,
         "reset"),
        (step, (x[:, 0], a[:, 0]), {"reset": torch.zeros(2, dtype=torch.long)}, TypeError,
         "reset"),
    ]


@pytest.mark.parametrize("fn, args, kwargs, error, name", _bad_calls())
def test_bad_arguments(fn, args, kwargs, error, name):
    with pytest.raises(error, match=rf"\b{name}\b"):
        fn(*args, **kwargs)


@pytest.mark.parametrize("backend", ["cpu", "triton"], indirect=True)
def test_fused_kernel_equals_torch_form(backend):
    """The fused kernel (C or Triton) against the chunked PyTorch form: outputs, final state
    and gradients, for the C kernel with the channels split over threads (bit-identical to one
    call), with a hard reset (log γ = −inf gives γ = 0 exactly) and a decay of exp(−120)
    (flushed to 0, as its product is below any normal float); a NaN decay stays NaN."""
    x, log_decay, state = _inputs(301)
    if backend == "cpu":  # 160 channels, enough to split
        x, log_decay, state = (t.repeat_interleave(5, -1) for t in (x, log_decay, state))
    log_decay[:, 100, 0] = -math.inf
    log_decay[:, 200, 1] = -120.0
    results = by_backend(lambda name, threads: _outputs_and_grads(
        partial(gated_diagonal_scan, backend=name, threads=threads), x, log_decay, state), backend)
    _assert_all_close(results[backend], results["torch"], 1e-6, backend)
    if backend == "cpu":
        assert all(torch.equal(a, b) for a, b in zip(results["cpu split"], results["cpu"],
                                                     strict=True))
    log_decay[0, 50, 2, 3] = math.nan
    h, _ = gated_diagonal_scan(x, log_decay, state, backend=backend)
    assert h[0, 50:, 2, 3].isnan().all() and not h[1].isnan().any()


def _triton_module():
    """The Triton kernels' module (imported once the backend fixture found triton)."""
    from hololm.ops.diagonal_scan import triton_form

    return triton_form


@pytest.mark.parametrize("T", [1, 63, 65, 200])
@pytest.mark.parametrize("block_c", [64, 8])
@TRITON
def test_triton_odd_lengths_and_channels(backend, monkeypatch, T, block_c):
    """Lengths that are not multiples of the 64-step chunk, over 12 channels: one block of 16
    with 4 masked, or (block_c = 8) two blocks, the second half masked."""
    monkeypatch.setattr(_triton_module(), "BLOCK_C", block_c)
    x, log_decay, state = _inputs(T, shape=(2, 3, 4))
    want = _outputs_and_grads(gated_diagonal_scan_ref, *_f64(x, log_decay, state))
    got = _outputs_and_grads(scan_on(backend), x, log_decay, state)
    _assert_all_close(got, want, 1e-6, f"T={T} BLOCK_C={block_c}")


@pytest.mark.parametrize("block_t, T", [(2, 37), (4, 4 ** 3 + 5), (4, 4 ** 4)])
@TRITON
def test_triton_recursion_levels(backend, monkeypatch, block_t, T):
    """Short chunks, so that few steps cross many recursion levels (37 steps in chunks of 2:
    six; 69 or 256 in chunks of 4: four, with and without tails): outputs and gradients equal
    the reference."""
    monkeypatch.setattr(_triton_module(), "BLOCK_T", block_t)
    x, log_decay, state = _inputs(T, shape=(1, 4, 2))
    want = _outputs_and_grads(gated_diagonal_scan_ref, *_f64(x, log_decay, state))
    got = _outputs_and_grads(scan_on(backend), x, log_decay, state)
    _assert_all_close(got, want, 1e-6, f"T={T} BLOCK_T={block_t}")


@TRITON
def test_triton_reads_bf16_inputs(backend):
    """The kernels read bf16 x and log γ themselves (the op casts them to float32 first): the
    states and the initial state's gradient are float32 computations on the rounded inputs; the
    other gradients come back rounded to bf16, as the reference's would."""
    scan = _triton_module().gated_diagonal_scan_triton
    x, log_decay, state = _inputs(65, torch.bfloat16)

    def fn(x, log_decay, state):
        h = scan(x, log_decay, state)
        return h, h[:, -1]

    want = _outputs_and_grads(gated_diagonal_scan_ref, *_f64(x, log_decay, state))
    got = _outputs_and_grads(fn, x, log_decay, state)
    assert got[0].dtype == torch.float32 and got[2].dtype == got[3].dtype == torch.bfloat16
    for name, a, b in zip(NAMES, got, want, strict=True):
        assert_close(a, b.to(a.dtype), 1e-3 if a.dtype == torch.bfloat16 else 1e-6, name)


def _biased_exp(ulps: float):
    """exp as a GPU computes `tl.exp` in float32 (ex2.approx of x·log2 e, documented to 2 ulp),
    with its error taken at `ulps` ulp, all in one direction: the worst case for a scan."""
    import numpy as np

    def exp(x):
        if x.dtype != np.float32:
            return np.exp(x)
        arg = (x * np.float32(math.log2(math.e))).astype(np.float32)
        return (np.exp2(arg.astype(np.float64)) * (1 + ulps * 2.0 ** -23)).astype(np.float32)

    return exp


@TRITON
def test_triton_long_memory_survives_a_biased_exp(backend, monkeypatch):
    """States that keep up to ~10^4 steps stay within 1e-6 of the float64 reference when the
    interpreter's exp errs by 4 ulp in one direction, as the GPU's approximate one may: near 1
    the kernels form γ from expm1's series, not from `tl.exp` (which put them 1.6e-4 off)."""
    _triton_module()
    from triton.runtime import interpreter

    monkeypatch.setattr(interpreter.InterpreterBuilder, "create_exp",
                        lambda self, arg: self.unary_op(arg, _biased_exp(4.0)))
    x, log_decay, state = _inputs(1000, shape=(1, 4, 4))  # heads from γ ≈ 0.5 (exp) to 0.9999
    want = _outputs_and_grads(gated_diagonal_scan_ref, *_f64(x, log_decay, state))
    got = _outputs_and_grads(scan_on(backend), x, log_decay, state)
    _assert_all_close(got, want, 1e-6, "biased exp")
