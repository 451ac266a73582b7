"""Gated outer-product matrix memory: the sequential reference (`holo_scan`), the chunked form and
the step form agree on outputs, final states and gradients; causality; extreme decays; bad
arguments. Every comparison is against a reference computed here, in float64."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F

from hololm.errors import BackendUnavailableError
from hololm.ops.matrix_memory import (
    cpu_form,
    fla_form,
    gated_matrix_memory,
    gated_matrix_memory_step,
    holo_scan,
)
from tests.helpers import assert_close, assert_same, by_backend, run
from tests.ops.documents import documents_alone, make_reset

BACKENDS = ("cpu", "torch")  # a test taking `backend` runs on each (conftest.py)
KERNEL = cpu_form.KERNEL
B, H, DK, DV = 2, 2, 8, 6
NAMES = ("q", "k", "v", "log_forget", "write", "initial_state")


def memory_on(backend: str):
    """`gated_matrix_memory` on `backend`."""
    return partial(gated_matrix_memory, backend=backend)


def make_inputs(T: int, log_forget: torch.Tensor | None = None, write: bool = True,
                state: bool = True) -> dict[str, torch.Tensor | None]:
    """Inputs shaped like the HoloGPT layer makes them: unit q, k; tanh v; sigmoid gates."""
    return {
        "q": F.normalize(torch.randn(B, T, H, DK), dim=-1),
        "k": F.normalize(torch.randn(B, T, H, DK), dim=-1),
        "v": torch.tanh(torch.randn(B, T, H, DV)),
        "log_forget": F.logsigmoid(torch.randn(B, T, H) + 2) if log_forget is None else log_forget,
        "write": torch.rand(B, T, H) if write else None,
        "initial_state": torch.randn(B, H, DK, DV) if state else None,
    }


def step_scan(q, k, v, log_forget, write=None, initial_state=None, read_before_write=False, *,
              reset=None):
    """The full sequence through `gated_matrix_memory_step`, token by token."""
    S, ys = initial_state, []
    for t in range(q.shape[1]):
        w_t = None if write is None else write[:, t]
        y, S = gated_matrix_memory_step(q[:, t], k[:, t], v[:, t], log_forget[:, t], w_t, S,
                                        read_before_write,
                                        reset=None if reset is None else reset[:, t])
        ys.append(y)
    return torch.stack(ys, dim=1), S


@pytest.mark.parametrize("read_before_write", [False, True])
@pytest.mark.parametrize("chunk_size", [7, 16, 64])
@pytest.mark.parametrize("T", [1, 2, 63, 64, 65, 257])
def test_chunked_matches_reference(T, chunk_size, read_before_write, backend):
    inputs = make_inputs(T)
    ref = run(holo_scan, inputs, torch.float64, read_before_write=read_before_write)
    got = run(memory_on(backend), inputs, read_before_write=read_before_write,
              chunk_size=chunk_size)
    assert got[0].dtype == got[1].dtype == torch.float32
    assert_same(got, ref, 1e-5)


@pytest.mark.parametrize("read_before_write", [False, True])
@pytest.mark.parametrize("T", [1, 65])
def test_step_matches_reference(T, read_before_write):
    inputs = make_inputs(T)
    ref = run(holo_scan, inputs, torch.float64, read_before_write=read_before_write)
    assert_same(run(step_scan, inputs, read_before_write=read_before_write), ref, 1e-5)
    assert_same(run(holo_scan, inputs, read_before_write=read_before_write), ref, 1e-5)


@pytest.mark.parametrize("read_before_write", [False, True])
def test_prefill_then_steps(read_before_write, backend):
    inputs, split = make_inputs(50), 37
    y_full, S_full = gated_matrix_memory(**inputs, read_before_write=read_before_write,
                                         chunk_size=16, backend=backend)
    head = {n: x if n == "initial_state" else x[:, :split] for n, x in inputs.items()}
    y, S = gated_matrix_memory(**head, read_before_write=read_before_write, chunk_size=16,
                               backend=backend)
    ys = [y]
    for t in range(split, 50):
        y_t, S = gated_matrix_memory_step(*(inputs[n][:, t] for n in NAMES[:5]), state=S,
                                          read_before_write=read_before_write)
        ys.append(y_t[:, None])
    assert_close(torch.cat(ys, dim=1), y_full, 1e-5, "y")
    assert_close(S, S_full, 1e-5, "final state")


@pytest.mark.parametrize("fn", [holo_scan, gated_matrix_memory, step_scan])
def test_defaults_mean_unit_write_and_zero_state(fn):
    inputs = make_inputs(20, write=False, state=False)
    explicit = dict(inputs, write=torch.ones(B, 20, H), initial_state=torch.zeros(B, H, DK, DV))
    y, S = fn(**inputs)
    y_ref, S_ref = fn(**explicit)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    torch.testing.assert_close(S, S_ref, rtol=0, atol=0)


@pytest.mark.parametrize("read_before_write", [False, True])
def test_causal(read_before_write, backend):
    T, t0 = 70, 40
    inputs = make_inputs(T)
    y, _ = gated_matrix_memory(**inputs, read_before_write=read_before_write, chunk_size=16,
                               backend=backend)
    later = {n: x.clone() for n, x in inputs.items()}
    for name in NAMES[:5]:
        later[name][:, t0 + 1:] = inputs[name][:, t0 + 1:] + 1
    y_later, _ = gated_matrix_memory(**later, read_before_write=read_before_write, chunk_size=16,
                                     backend=backend)
    assert (y_later[:, :t0 + 1] - y[:, :t0 + 1]).abs().max() <= 1e-6
    assert (y_later[:, t0 + 1:] - y[:, t0 + 1:]).abs().max() > 1e-3


def test_read_before_write_ignores_the_current_write(backend):
    T, t0 = 30, 12
    inputs = make_inputs(T)
    changed = {n: x.clone() for n, x in inputs.items()}
    for name in ("k", "v", "log_forget", "write"):
        changed[name][:, t0] = inputs[name][:, t0] - 1
    for fn in (holo_scan, memory_on(backend)):
        y, _ = fn(**inputs, read_before_write=True)
        y_changed, _ = fn(**changed, read_before_write=True)
        assert (y_changed[:, :t0 + 1] - y[:, :t0 + 1]).abs().max() <= 1e-6
        assert (y_changed[:, t0 + 1] - y[:, t0 + 1]).abs().max() > 1e-3


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("fn", [gated_matrix_memory, step_scan])
def test_half_inputs(fn, dtype):
    """Half inputs are upcast and computed in float32: against the float64 reference on the same
    (rounded) inputs, y and the state match to float32 accuracy; gradients come back in the
    inputs' dtype, so they match to its rounding (2^-8 relative for bfloat16)."""
    inputs = {n: x.to(dtype) if n != "initial_state" else x for n, x in make_inputs(65).items()}
    ref = run(holo_scan, inputs, torch.float64)
    y, S, grads = got = run(fn, inputs, dtype)
    assert y.dtype == S.dtype == torch.float32
    assert all(g.dtype == dtype for n, g in grads.items() if n != "initial_state")
    assert_same(got, ref, 1e-5, grad_tol=5e-3)


def test_bf16_autocast_keeps_the_chunk_states_in_float32(backend):
    """Under CPU bf16 autocast the matmuls run in bf16, but the states passed from chunk to chunk
    are summed in float32: over 40 chunks without decay, y, the final state and every gradient
    stay within one bf16 rounding (~4e-3) of the exact values (states summed in bf16: ~9e-3)."""
    inputs = make_inputs(40 * 8 + 3)
    inputs["log_forget"] = torch.zeros_like(inputs["log_forget"])
    ref = run(holo_scan, inputs, torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = run(memory_on(backend), inputs, chunk_size=8)
    assert got[1].dtype == torch.float32
    assert_same(got, ref, 5e-3, grad_tol=6e-3)


def test_float64_in_float64_out():
    inputs = make_inputs(65)
    ref = run(holo_scan, inputs, torch.float64)
    for fn in (gated_matrix_memory, step_scan):
        y, S, grads = got = run(fn, inputs, torch.float64)
        assert y.dtype == S.dtype == torch.float64
        assert_same(got, ref, 1e-12)
    y, S = gated_matrix_memory(**dict(inputs, initial_state=inputs["initial_state"].double()))
    assert y.dtype == S.dtype == torch.float64


@pytest.mark.parametrize("chunk_size", [64, 128])
@pytest.mark.parametrize("decays", ["all -50", "mixed"])
def test_strong_decays(decays, chunk_size, backend):
    """log f down to -50 per step: Γ reaches -6400 within a chunk, so exp(-Γ) overflows and
    float32 Γ loses the small differences; outputs and gradients stay finite and exact."""
    T = 257
    if decays == "all -50":
        log_forget = torch.full((B, T, H), -50.0)
    else:  # strong decays between runs of weak ones
        strong = torch.rand(B, T, H) < 0.5
        log_forget = torch.where(strong, -50 * torch.rand(B, T, H), -0.01 * torch.rand(B, T, H))
    assert torch.isinf(torch.exp(-log_forget[:, :chunk_size].sum(1))).all()
    inputs = make_inputs(T, log_forget=log_forget)
    for read_before_write in (False, True):
        ref = run(holo_scan, inputs, torch.float64, read_before_write=read_before_write)
        got = run(memory_on(backend), inputs, read_before_write=read_before_write,
                  chunk_size=chunk_size)
        assert_same(got, ref, 2e-6, grad_tol=1e-5)


def test_no_decay_long_sequence(backend):
    """log f = 0: plain causal linear attention, y = tril(Q Kᵀ ⊙ w) V + Q S_0 (closed backend)."""
    T = 1024
    inputs = make_inputs(T, log_forget=torch.zeros(B, T, H))
    y, S = gated_matrix_memory(**inputs, chunk_size=64, backend=backend)
    q, k, v, _, w, s0 = (inputs[n].double() for n in NAMES)
    scores = torch.einsum("bthd,bshd->bhts", q, k) * w.permute(0, 2, 1)[:, :, None, :]
    y_ref = torch.einsum("bhts,bshe->bthe", scores.tril(), v)
    y_ref = y_ref + torch.einsum("bthd,bhde->bthe", q, s0)
    S_ref = s0 + torch.einsum("bth,bthd,bthe->bhde", w, k, v)
    assert_close(y, y_ref, 1e-5, "y")
    assert_close(S, S_ref, 1e-5, "final state")
    ref = run(holo_scan, inputs, torch.float64)
    assert_same(run(memory_on(backend), inputs), ref, 1e-5)


def _seq(**changes):
    return dict(make_inputs(5), **changes)


BAD_SEQUENCE_ARGS = [
    (dict(q=[[0.0]]), TypeError, "^q "),
    (dict(q=torch.zeros(B, 5, H, DK, dtype=torch.int64)), TypeError, "^q "),
    (dict(q=torch.zeros(B, 5, DK)), ValueError, "^q "),
    (dict(q=torch.zeros(B, 0, H, DK), k=torch.zeros(B, 0, H, DK), v=torch.zeros(B, 0, H, DV),
          log_forget=torch.zeros(B, 0, H), write=torch.zeros(B, 0, H)), ValueError, "^q "),
    (dict(k=torch.zeros(B, 5, H, DK + 1)), ValueError, "^k "),
    (dict(v=torch.zeros(B, 6, H, DV)), ValueError, "^v "),
    (dict(v=torch.zeros(B, 5, H)), ValueError, "^v "),
    (dict(log_forget=torch.zeros(B, 5, H, 1)), ValueError, "^log_forget "),
    (dict(log_forget=torch.zeros(B, 5, H + 1)), ValueError, "^log_forget "),
    (dict(log_forget=torch.zeros(B, 5, H, dtype=torch.int32)), TypeError, "^log_forget "),
    (dict(write=torch.zeros(B, 4, H)), ValueError, "^write "),
    (dict(initial_state=torch.zeros(B, H, DV, DK)), ValueError, "^initial_state "),
    (dict(initial_state=torch.zeros(B, H, DK, DV, dtype=torch.bfloat16)), TypeError,
     "^initial_state "),
    (dict(read_before_write=1), TypeError, "^read_before_write "),
    (dict(reset=[[True]]), TypeError, "^reset "),
    (dict(reset=torch.zeros(B, 5)), TypeError, "^reset must be a bool tensor"),
    (dict(reset=torch.zeros(B, 4, dtype=torch.bool)), ValueError,
     r"^reset must have shape \(2, 5\)"),
    (dict(reset=torch.zeros(B, 5, H, dtype=torch.bool)), ValueError, "^reset "),
]


@pytest.mark.parametrize("fn", [holo_scan, gated_matrix_memory])
@pytest.mark.parametrize("changes, error, match", BAD_SEQUENCE_ARGS)
def test_bad_sequence_arguments(fn, changes, error, match):
    with pytest.raises(error, match=match):
        fn(**_seq(**changes))


@pytest.mark.parametrize("chunk_size", [0, -1, 2.0, True])
def test_bad_chunk_size(chunk_size):
    with pytest.raises(ValueError, match="^chunk_size "):
        gated_matrix_memory(**_seq(), chunk_size=chunk_size)


@pytest.mark.parametrize("changes, error, match", [
    (dict(q=torch.zeros(B, 5, H, DK)), ValueError, "^q "),
    (dict(v=torch.zeros(B, H + 1, DV)), ValueError, "^v "),
    (dict(log_forget=torch.zeros(B, 5, H)), ValueError, "^log_forget "),
    (dict(write=torch.zeros(B)), ValueError, "^write "),
    (dict(state=torch.zeros(B, H, DK, DV + 1)), ValueError, "^state "),
    (dict(state=torch.zeros(B, H, DK, DV, dtype=torch.float16)), TypeError, "^state "),
    (dict(reset=torch.zeros(B, dtype=torch.int64)), TypeError, "^reset "),
    (dict(reset=torch.zeros(B, 5, dtype=torch.bool)), ValueError,
     r"^reset must have shape \(2,\)"),
])
def test_bad_step_arguments(changes, error, match):
    token = {n: x[:, 0] for n, x in make_inputs(5).items() if n in NAMES[:5]}
    with pytest.raises(error, match=match):
        gated_matrix_memory_step(**{**token, "state": None, **changes})


@pytest.mark.parametrize("read_before_write", [False, True])
@pytest.mark.parametrize("backend", ["cpu"], indirect=True)
def test_native_kernel_equals_torch_form(backend, read_before_write):
    """The fused decay mask against its PyTorch form: outputs, final state and every gradient,
    with strong decays between weak ones (weights that underflow to 0 included), the blocks
    split over threads bit-identical to one call."""
    T = 3 * 16 + 5
    strong = torch.rand(B, T, H) < 0.3
    log_forget = torch.where(strong, -60 * torch.rand(B, T, H), -0.05 * torch.rand(B, T, H))
    inputs = make_inputs(T, log_forget=log_forget)
    results = by_backend(lambda name, threads: run(
        partial(gated_matrix_memory, backend=name, threads=threads), inputs,
        read_before_write=read_before_write, chunk_size=16), backend)
    assert_same(results["cpu"], results["torch"], 1e-6)
    native, split = results["cpu"], results["cpu split"]
    assert torch.equal(native[0], split[0]) and torch.equal(native[1], split[1])
    assert all(torch.equal(native[2][n], split[2][n]) for n in native[2])


@pytest.mark.parametrize("backend", ["reference", "torch", "cpu"])
def test_named_backends_match_reference(backend):
    if backend == "cpu" and KERNEL.library() is None:
        pytest.skip("no C compiler")
    inputs = make_inputs(40)
    ref = run(holo_scan, inputs, torch.float64)
    assert_same(run(memory_on(backend), inputs, chunk_size=16), ref,
                1e-5)


def test_unavailable_backends_say_why():
    seq = _seq()
    with pytest.raises(BackendUnavailableError, match="unknown backend 'triton'; choose from "
                       "auto, reference, torch, cpu, fla"):
        gated_matrix_memory(**seq, backend="triton")
    with pytest.raises(BackendUnavailableError, match="'fla' is unavailable: wrong device"):
        gated_matrix_memory(**seq, backend="fla")


# Packed documents (`reset=`): starts at t = 0, mid-chunk, on chunk boundaries, in a row, at the
# last token (tests/ops/documents.py), with odd lengths and chunk sizes.


@pytest.mark.parametrize("read_before_write", [False, True])
@pytest.mark.parametrize("chunk_size", [7, pytest.param(16, marks=pytest.mark.slow), 64])
@pytest.mark.parametrize("T", [pytest.param(1, marks=pytest.mark.slow), 2, 37,
                               pytest.param(64, marks=pytest.mark.slow), 65])
def test_resets_match_reference(T, chunk_size, read_before_write, backend):
    """Outputs, final state and every gradient (the initial state's included) with document
    starts, against the float64 reference."""
    inputs, reset = make_inputs(T), make_reset(B, T, chunk_size)
    ref = run(holo_scan, inputs, torch.float64, read_before_write=read_before_write, reset=reset)
    got = run(memory_on(backend), inputs, read_before_write=read_before_write,
              chunk_size=chunk_size, reset=reset)
    assert_same(got, ref, 1e-5)


@pytest.mark.parametrize("state", [True, False])
@pytest.mark.parametrize("read_before_write", [False, True])
def test_reference_resets_run_each_document_alone(read_before_write, state):
    """The reference with resets equals every document run by itself (the first of a row from
    the initial state, the others from zero): outputs, final states and gradients."""
    inputs, reset = make_inputs(41, state=state), make_reset(B, 41, 8)
    alone = documents_alone(holo_scan, NAMES[:5])
    ref = run(alone, inputs, torch.float64, read_before_write=read_before_write, reset=reset)
    got = run(holo_scan, inputs, torch.float64, read_before_write=read_before_write, reset=reset)
    assert_same(got, ref, 1e-12)


@pytest.mark.parametrize("read_before_write", [False, True])
def test_step_with_resets_matches_reference(read_before_write):
    inputs, reset = make_inputs(37), make_reset(B, 37, 8)
    ref = run(holo_scan, inputs, torch.float64, read_before_write=read_before_write, reset=reset)
    assert_same(run(step_scan, inputs, read_before_write=read_before_write, reset=reset), ref,
                1e-5)


@pytest.mark.parametrize("read_before_write", [False, True])
def test_prefill_then_steps_with_resets(read_before_write, backend):
    """Prefill cut inside a document, then token by token: starts on both sides of the cut."""
    inputs, split = make_inputs(50), 29
    reset = make_reset(B, 50, 12)
    y_full, S_full = gated_matrix_memory(**inputs, read_before_write=read_before_write,
                                         chunk_size=16, reset=reset, backend=backend)
    head = {n: x if n == "initial_state" else x[:, :split] for n, x in inputs.items()}
    y, S = gated_matrix_memory(**head, read_before_write=read_before_write, chunk_size=16,
                               reset=reset[:, :split], backend=backend)
    ys = [y]
    for t in range(split, 50):
        y_t, S = gated_matrix_memory_step(*(inputs[n][:, t] for n in NAMES[:5]), state=S,
                                          read_before_write=read_before_write,
                                          reset=reset[:, t])
        ys.append(y_t[:, None])
    assert_close(torch.cat(ys, dim=1), y_full, 1e-5, "y")
    assert_close(S, S_full, 1e-5, "final state")


def test_resets_with_strong_decays(backend):
    """Starts between strong decays (log f down to -50): the masks multiply terms whose log
    decays stay finite, so outputs and gradients stay finite and exact."""
    T = 3 * 16 + 5
    strong = torch.rand(B, T, H) < 0.5
    log_forget = torch.where(strong, -50 * torch.rand(B, T, H), -0.01 * torch.rand(B, T, H))
    inputs, reset = make_inputs(T, log_forget=log_forget), make_reset(B, T, 16)
    for read_before_write in (False, True):
        ref = run(holo_scan, inputs, torch.float64, read_before_write=read_before_write,
                  reset=reset)
        got = run(memory_on(backend), inputs, read_before_write=read_before_write,
                  chunk_size=16, reset=reset)
        assert_same(got, ref, 2e-6, grad_tol=1e-5)


def test_no_reset_is_no_start():
    """An all-False reset is the call without one, bit for bit (the masks multiply by 1)."""
    inputs = make_inputs(40)
    for fn in (holo_scan, partial(gated_matrix_memory, chunk_size=16)):
        y, S = fn(**inputs)
        y_none, S_none = fn(**inputs, reset=torch.zeros(B, 40, dtype=torch.bool))
        assert torch.equal(y, y_none) and torch.equal(S, S_none)


def test_fla_refuses_resets():
    """fla takes packed documents only as one varlen row: an explicit backend="fla" with
    `reset` says so (before any device check), and "auto" never takes fla with one."""
    seq = _seq()
    reset = torch.zeros(B, 5, dtype=torch.bool)
    with pytest.raises(BackendUnavailableError, match="'fla' is unavailable: document resets"):
        gated_matrix_memory(**seq, reset=reset, backend="fla")
    assert fla_form.unavailable(seq["q"], seq["k"], seq["v"], False, torch.float32, reset) \
        .startswith("document resets")
