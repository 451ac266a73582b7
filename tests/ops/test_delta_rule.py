"""Gated delta rule: the sequential reference, the chunked (WY) form and the step form agree on
outputs, final states and gradients (initial state included); a key written again holds its new
value; causality; strong decays; 100k tokens; bad arguments. Comparisons are against the
reference computed in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hololm.errors import BackendUnavailableError
from hololm.ops.delta_rule import (
    fla_form,
    gated_delta_rule,
    gated_delta_rule_ref,
    gated_delta_rule_step,
)
from tests.helpers import assert_close, assert_same, run
from tests.ops.documents import documents_alone, make_reset

B, H, DK, DV = 2, 2, 8, 6
NAMES = ("q", "k", "v", "beta", "log_forget", "initial_state")


def make_inputs(T: int, gated: bool = True, state: bool = True,
                log_forget: torch.Tensor | None = None) -> dict[str, torch.Tensor | None]:
    """Inputs shaped as a delta-rule layer makes them: unit q, k; sigmoid β; logsigmoid gates."""
    if log_forget is None and gated:
        log_forget = F.logsigmoid(torch.randn(B, T, H) + 2)
    return {
        "q": F.normalize(torch.randn(B, T, H, DK), dim=-1),
        "k": F.normalize(torch.randn(B, T, H, DK), dim=-1),
        "v": torch.randn(B, T, H, DV),
        "beta": torch.rand(B, T, H),
        "log_forget": log_forget,
        "initial_state": torch.randn(B, H, DK, DV) if state else None,
    }


def step_scan(q, k, v, beta, log_forget=None, initial_state=None, *, reset=None):
    """The full sequence through `gated_delta_rule_step`, token by token."""
    S, ys = initial_state, []
    for t in range(q.shape[1]):
        f_t = None if log_forget is None else log_forget[:, t]
        y, S = gated_delta_rule_step(q[:, t], k[:, t], v[:, t], beta[:, t], f_t, S,
                                     reset=None if reset is None else reset[:, t])
        ys.append(y)
    return torch.stack(ys, dim=1), S


@pytest.mark.parametrize("gated", [True, False])
@pytest.mark.parametrize("chunk_size", [7, 16, 64])
@pytest.mark.parametrize("T", [1, 2, 63, 64, 65, 257])
def test_chunked_matches_reference(T, chunk_size, gated):
    inputs = make_inputs(T, gated)
    ref = run(gated_delta_rule_ref, inputs, torch.float64)
    got = run(gated_delta_rule, inputs, chunk_size=chunk_size)
    assert got[0].dtype == got[1].dtype == torch.float32
    assert_same(got, ref, 1e-5)


@pytest.mark.parametrize("gated", [True, False])
@pytest.mark.parametrize("T", [1, 65])
def test_step_and_reference_in_float32_match_float64(T, gated):
    inputs = make_inputs(T, gated)
    ref = run(gated_delta_rule_ref, inputs, torch.float64)
    assert_same(run(step_scan, inputs), ref, 1e-5)
    assert_same(run(gated_delta_rule_ref, inputs), ref, 1e-5)


def test_prefill_then_steps():
    inputs, split = make_inputs(50), 37
    y_full, S_full = gated_delta_rule(**inputs, chunk_size=16)
    head = {n: x if n == "initial_state" else x[:, :split] for n, x in inputs.items()}
    y, S = gated_delta_rule(**head, chunk_size=16)
    ys = [y]
    for t in range(split, 50):
        y_t, S = gated_delta_rule_step(*(inputs[n][:, t] for n in NAMES[:5]), state=S)
        ys.append(y_t[:, None])
    assert_close(torch.cat(ys, dim=1), y_full, 1e-5, "y")
    assert_close(S, S_full, 1e-5, "final state")


def test_a_key_written_again_holds_its_new_value():
    """With β = 1 and no decay, writing (k, v₁) then (k, v₂) leaves S kᵀ = v₂ exactly where an
    additive memory would hold v₁ + v₂; another orthogonal key keeps its own value."""
    k1, k2 = torch.eye(DK)[0], torch.eye(DK)[1]
    v1, v2, v3 = torch.randn(3, DV)
    k = torch.stack([k1, k2, k1])[None, :, None].expand(1, 3, 1, DK)
    v = torch.stack([v1, v3, v2])[None, :, None]
    q = torch.stack([k1, k1, k1])[None, :, None]
    ones = torch.ones(1, 3, 1)
    for fn in (gated_delta_rule_ref, gated_delta_rule, step_scan):
        y, S = fn(q, k, v, ones)
        torch.testing.assert_close(y[0, :, 0], torch.stack([v1, v1, v2]))
        torch.testing.assert_close(S[0, 0].T @ k2, v3)


def test_defaults_mean_no_decay_and_zero_state():
    inputs = make_inputs(20, gated=False, state=False)
    explicit = dict(inputs, log_forget=torch.zeros(B, 20, H),
                    initial_state=torch.zeros(B, H, DK, DV))
    for fn in (gated_delta_rule_ref, gated_delta_rule, step_scan):
        y, S = fn(**inputs)
        y_ref, S_ref = fn(**explicit)
        torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-7)
        torch.testing.assert_close(S, S_ref, rtol=0, atol=1e-7)


def test_causal():
    T, t0 = 70, 40
    inputs = make_inputs(T)
    y, _ = gated_delta_rule(**inputs, chunk_size=16)
    later = {n: x.clone() for n, x in inputs.items()}
    for name in NAMES[:5]:
        later[name][:, t0 + 1:] = inputs[name][:, t0 + 1:] + 0.5
    y_later, _ = gated_delta_rule(**later, chunk_size=16)
    assert (y_later[:, :t0 + 1] - y[:, :t0 + 1]).abs().max() <= 1e-6
    assert (y_later[:, t0 + 1:] - y[:, t0 + 1:]).abs().max() > 1e-3


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("fn", [gated_delta_rule, step_scan])
def test_half_inputs(fn, dtype):
    """Half inputs are upcast and computed in float32: against the float64 reference on the same
    (rounded) inputs, y and the state match to float32 accuracy; gradients come back in the
    inputs' dtype, so they match to its rounding (2^-8 relative for bfloat16)."""
    inputs = {n: x.to(dtype) if n != "initial_state" else x for n, x in make_inputs(65).items()}
    ref = run(gated_delta_rule_ref, inputs, torch.float64)
    y, S, grads = got = run(fn, inputs, dtype)
    assert y.dtype == S.dtype == torch.float32
    assert all(g.dtype == dtype for n, g in grads.items() if n != "initial_state")
    assert_same(got, ref, 1e-5, grad_tol=5e-3)


def test_bf16_autocast():
    """Under CPU bf16 autocast the chunk matmuls run in bf16 and the chunk-to-chunk states in
    float32: over 40 chunks, y, the final state and every gradient stay within 2e-2 of the exact
    values (bf16 keeps 8 bits; the triangular solve compounds a few roundings)."""
    inputs = make_inputs(40 * 8 + 3)
    ref = run(gated_delta_rule_ref, inputs, torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = run(gated_delta_rule, inputs, chunk_size=8)
    assert got[1].dtype == torch.float32
    assert_same(got, ref, 2e-2)


def test_float64_in_float64_out():
    inputs = make_inputs(65)
    ref = run(gated_delta_rule_ref, inputs, torch.float64)
    for fn in (gated_delta_rule, step_scan):
        y, S, _ = got = run(fn, inputs, torch.float64)
        assert y.dtype == S.dtype == torch.float64
        assert_same(got, ref, 1e-12)


@pytest.mark.parametrize("decays", ["all -50", "mixed"])
def test_strong_decays(decays):
    """log f down to -50 per step: G reaches -3200 within a chunk of 64, so e^{-G} overflows;
    outputs and gradients stay finite and exact."""
    T = 200
    if decays == "all -50":
        log_forget = torch.full((B, T, H), -50.0)
    else:
        strong = torch.rand(B, T, H) < 0.5
        log_forget = torch.where(strong, -50 * torch.rand(B, T, H), -0.01 * torch.rand(B, T, H))
    inputs = make_inputs(T, log_forget=log_forget)
    ref = run(gated_delta_rule_ref, inputs, torch.float64)
    assert_same(run(gated_delta_rule, inputs, chunk_size=64), ref, 1e-5)


def test_100k_tokens_stay_bounded():
    """β ∈ [0, 1] and unit keys make every step a contraction plus a bounded write: over 100k
    tokens without decay the state stays finite and within √Dk times the largest value."""
    T = 100_000
    inputs = make_inputs(T, gated=False, state=False)
    inputs = {n: None if x is None else x[:1, :, :1] for n, x in inputs.items()}
    y, S = gated_delta_rule(**inputs)
    assert torch.isfinite(y).all() and torch.isfinite(S).all()
    bound = DK ** 0.5 * inputs["v"].norm(dim=-1).max()  # ‖S‖_F <= √Dk · max ‖v_t‖
    assert S.norm() <= bound and y.norm(dim=-1).max() <= bound


def test_backends_name_their_form():
    """"reference" is the loop, "torch" and "auto" (on CPU) the chunked form; "fla" needs CUDA
    and half-precision inputs, and says so."""
    inputs = make_inputs(33)
    ref = gated_delta_rule_ref(**inputs)
    for backend in ("reference", "torch", "auto"):
        y, S = gated_delta_rule(**inputs, chunk_size=8, backend=backend)
        assert_close(y, ref[0], 1e-5, f"y on {backend}")
        assert_close(S, ref[1], 1e-5, f"state on {backend}")
    with pytest.raises(BackendUnavailableError, match="gated_delta_rule.*'fla'.*CUDA"):
        gated_delta_rule(**inputs, backend="fla")
    with pytest.raises(BackendUnavailableError, match="unknown backend 'cpu'"):
        gated_delta_rule(**inputs, backend="cpu")


@pytest.mark.parametrize("fn", [gated_delta_rule_ref, gated_delta_rule])
def test_bad_arguments(fn):
    inputs = make_inputs(5)
    with pytest.raises(ValueError, match="beta must have shape"):
        fn(**dict(inputs, beta=inputs["beta"][:, :4]))
    with pytest.raises(TypeError, match="initial_state must have dtype"):
        fn(**dict(inputs, initial_state=inputs["initial_state"].half()))
    with pytest.raises(ValueError, match="at least one time step"):
        fn(**{n: x if n == "initial_state" else x[:, :0] for n, x in inputs.items()})
    with pytest.raises(ValueError, match="v must have shape"):
        fn(**dict(inputs, v=inputs["v"][:, :, :1]))
    with pytest.raises(TypeError, match="^reset must be a bool tensor"):
        fn(**inputs, reset=torch.zeros(B, 5))
    with pytest.raises(ValueError, match=r"^reset must have shape \(2, 5\)"):
        fn(**inputs, reset=torch.zeros(B, 6, dtype=torch.bool))
    if fn is gated_delta_rule:
        with pytest.raises(ValueError, match="chunk_size must be a positive int"):
            fn(**inputs, chunk_size=0)


def test_bad_step_reset():
    token = {n: x[:, 0] for n, x in make_inputs(5).items() if n in NAMES[:5]}
    with pytest.raises(TypeError, match="^reset "):
        gated_delta_rule_step(**token, reset=[True, False])
    with pytest.raises(ValueError, match=r"^reset must have shape \(2,\)"):
        gated_delta_rule_step(**token, reset=torch.zeros(B, 1, dtype=torch.bool))


# Packed documents (`reset=`): starts at t = 0, mid-chunk, on chunk boundaries, in a row, at the
# last token (tests/ops/documents.py), with odd lengths and chunk sizes.


@pytest.mark.parametrize("gated", [True, False])
@pytest.mark.parametrize("chunk_size", [7, pytest.param(16, marks=pytest.mark.slow), 64])
@pytest.mark.parametrize("T", [pytest.param(1, marks=pytest.mark.slow), 2, 37,
                               pytest.param(64, marks=pytest.mark.slow), 65])
def test_resets_match_reference(T, chunk_size, gated):
    """The chunked form with document starts: outputs, final state and every gradient (the
    initial state's included) against the float64 reference."""
    inputs, reset = make_inputs(T, gated), make_reset(B, T, chunk_size)
    ref = run(gated_delta_rule_ref, inputs, torch.float64, reset=reset)
    got = run(gated_delta_rule, inputs, chunk_size=chunk_size, reset=reset, backend="torch")
    assert_same(got, ref, 1e-5)


@pytest.mark.parametrize("state", [True, False])
@pytest.mark.parametrize("gated", [True, False])
def test_reference_resets_run_each_document_alone(gated, state):
    """The reference with resets equals every document run by itself (the first of a row from
    the initial state, the others from zero): outputs, final states and gradients."""
    inputs, reset = make_inputs(41, gated, state), make_reset(B, 41, 8)
    alone = documents_alone(gated_delta_rule_ref, NAMES[:5])
    ref = run(alone, inputs, torch.float64, reset=reset)
    assert_same(run(gated_delta_rule_ref, inputs, torch.float64, reset=reset), ref, 1e-12)


@pytest.mark.parametrize("gated", [True, False])
def test_step_with_resets_matches_reference(gated):
    inputs, reset = make_inputs(37, gated), make_reset(B, 37, 8)
    ref = run(gated_delta_rule_ref, inputs, torch.float64, reset=reset)
    assert_same(run(step_scan, inputs, reset=reset), ref, 1e-5)


def test_prefill_then_steps_with_resets():
    """Prefill cut inside a document, then token by token: starts on both sides of the cut."""
    inputs, split = make_inputs(50), 29
    reset = make_reset(B, 50, 12)
    y_full, S_full = gated_delta_rule(**inputs, chunk_size=16, reset=reset)
    head = {n: x if n == "initial_state" else x[:, :split] for n, x in inputs.items()}
    y, S = gated_delta_rule(**head, chunk_size=16, reset=reset[:, :split])
    ys = [y]
    for t in range(split, 50):
        y_t, S = gated_delta_rule_step(*(inputs[n][:, t] for n in NAMES[:5]), state=S,
                                       reset=reset[:, t])
        ys.append(y_t[:, None])
    assert_close(torch.cat(ys, dim=1), y_full, 1e-5, "y")
    assert_close(S, S_full, 1e-5, "final state")


def test_resets_with_strong_decays():
    """Starts between strong decays (log f down to -50): masks on terms whose log decays stay
    finite, so outputs and gradients stay finite and exact."""
    T = 3 * 16 + 5
    strong = torch.rand(B, T, H) < 0.5
    log_forget = torch.where(strong, -50 * torch.rand(B, T, H), -0.01 * torch.rand(B, T, H))
    inputs, reset = make_inputs(T, log_forget=log_forget), make_reset(B, T, 16)
    ref = run(gated_delta_rule_ref, inputs, torch.float64, reset=reset)
    assert_same(run(gated_delta_rule, inputs, chunk_size=16, reset=reset), ref, 1e-5)


def test_fla_refuses_resets():
    """fla takes packed documents only as one varlen row: an explicit backend="fla" with
    `reset` says so (before any device check), and "auto" never takes fla with one."""
    inputs = make_inputs(5)
    reset = torch.zeros(B, 5, dtype=torch.bool)
    with pytest.raises(BackendUnavailableError, match="'fla' is unavailable: document resets"):
        gated_delta_rule(**inputs, reset=reset, backend="fla")
    assert fla_form.unavailable(inputs["q"], inputs["k"], inputs["v"], torch.float32, reset) \
        .startswith("document resets")
