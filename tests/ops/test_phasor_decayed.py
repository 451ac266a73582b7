"""The phasor memory with forgetting: the fast form (a gated diagonal scan) equals the loop on
outputs, final memory and gradients (decays, query shift and initial memory included), with and
without padding; λ = 1 is the undecayed memory; strong decays and 100k tokens stay exact and
bounded; resets drop the memory in every scan backend, each segment as if run alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hololm.ops.diagonal_scan import cpu_form
from hololm.ops.phasor import generate_random_phasors, phasor_memory
from hololm.ops.phasor.decayed import phasor_memory_decayed, phasor_memory_decayed_ref
from tests.helpers import assert_close

B, H, D = 2, 3, 5
BACKENDS = ("torch", "cpu", "triton")  # the diagonal scan's: a test taking `backend` runs on each
KERNEL = cpu_form.KERNEL


def _inputs(T: int, dtype=torch.float64, decay_shift: float = 3.0) -> dict:
    gen = torch.Generator().manual_seed(T)
    return {"v": torch.randn(B, T, H, D, generator=gen, dtype=dtype),
            "key_phase": torch.randn(B, T, H, D, generator=gen, dtype=dtype),
            "query_phase": torch.randn(B, T, H, D, generator=gen, dtype=dtype),
            "freqs": generate_random_phasors(H * D, seed=0).view(H, D),
            "log_decay": F.logsigmoid(torch.randn(H, generator=gen, dtype=dtype) + decay_shift),
            "query_shift": torch.randn(H, generator=gen, dtype=dtype),
            "initial_state": torch.randn(B, H, D, generator=gen, dtype=torch.complex128)}


def _run(fn, inputs: dict, **kwargs):
    """(r complex, memory, gradients of v, the phases, log_decay, query_shift and the initial
    memory)."""
    leaves = {k: x.detach().requires_grad_() if k in ("v", "key_phase", "query_phase",
                                                      "log_decay", "query_shift",
                                                      "initial_state") else x
              for k, x in inputs.items()}
    r, m = fn(**leaves, **kwargs)
    if r.dim() == 5:  # planar parts [B, T, 2, H, D]
        r = torch.complex(r[:, :, 0], r[:, :, 1])
    gen = torch.Generator().manual_seed(1)  # the same cotangents whatever the dtype
    g_re, g_im = (torch.randn(r.shape, generator=gen, dtype=torch.float64) for _ in range(2))
    loss = (r.real.double() * g_re).sum() + (r.imag.double() * g_im).sum() + m.abs().sum()
    names = [k for k, x in leaves.items() if isinstance(x, torch.Tensor) and x.requires_grad]
    return r, m, dict(zip(names, torch.autograd.grad(loss, [leaves[n] for n in names]),
                          strict=True))


def _assert_same(got, ref, tol: float) -> None:
    assert_close(got[0], ref[0], tol, "r")
    assert_close(got[1], ref[1], tol, "memory")
    for name, grad in ref[2].items():
        assert_close(got[2][name], grad, tol, f"grad {name}")


@pytest.mark.parametrize("padded", [False, True], ids=["dense", "padded"])
@pytest.mark.parametrize("T", [1, 37])
def test_fast_form_equals_the_loop(T, padded):
    inputs = _inputs(T)
    extra = {}
    if padded:  # pads neither decay nor write; c_t counts each row's real tokens
        keep = torch.rand(B, T, generator=torch.Generator().manual_seed(2)) > 0.3
        inputs["v"] = torch.where(keep[..., None, None], inputs["v"], 0.0)
        extra = {"keep": keep, "counts": (keep.cumsum(1) - 1).clamp(min=0) + 4.0}
    ref = _run(phasor_memory_decayed_ref, inputs, offset=4, **extra)
    _assert_same(_run(phasor_memory_decayed, inputs, offset=4, **extra), ref, 1e-12)
    f32 = {k: x.float() if k in ("v", "key_phase", "query_phase") else x
           for k, x in inputs.items()}
    f32["initial_state"] = inputs["initial_state"].to(torch.complex64)
    got = _run(phasor_memory_decayed, f32, offset=4, **extra)
    assert got[0].dtype == torch.complex64
    _assert_same(got, ref, 1e-5)


def test_no_decay_is_the_undecayed_memory():
    inputs = _inputs(40)
    inputs["log_decay"] = torch.zeros(H, dtype=torch.float64)
    parts, m = phasor_memory_decayed(**inputs, offset=3)
    plain = {k: x for k, x in inputs.items() if k != "log_decay"}
    r_plain, m_plain = phasor_memory(**plain, offset=3, backend="reference")
    assert_close(torch.complex(parts[:, :, 0], parts[:, :, 1]), r_plain, 1e-12, "r")
    assert_close(m, m_plain, 1e-12, "memory")


def test_strong_decay_keeps_only_the_last_item():
    """λ = e^-50: the memory is the last write alone (the rest underflows to its true, tiny
    value) and the read is exact, with no overflow anywhere."""
    inputs = _inputs(30, decay_shift=0.0)
    inputs["log_decay"] = torch.full((H,), -50.0, dtype=torch.float64)
    r, m, grads = _run(phasor_memory_decayed, inputs)
    assert all(torch.isfinite(g).all() for g in grads.values())
    ref = _run(phasor_memory_decayed_ref, inputs)
    _assert_same((r, m, grads), ref, 1e-12)
    last = inputs["v"][:, -1] * torch.polar(torch.ones(B, H, D, dtype=torch.float64),
                                            inputs["key_phase"][:, -1] + 29 * inputs["freqs"])
    assert_close(m, last, 1e-12, "memory = the last write")


def test_100k_tokens_stay_bounded():
    """The retrieval of a decaying memory of unit items stays at unit scale over 100k tokens."""
    T = 100_000
    inputs = {k: (x[:1, :1].expand(1, T, *x.shape[2:]).contiguous() if x.dim() == 4 else x)
              for k, x in _inputs(1, torch.float32).items() if k != "initial_state"}
    gen = torch.Generator().manual_seed(3)
    inputs["key_phase"] = torch.rand(1, T, H, D, generator=gen) * 6.28 - 3.14
    inputs["query_phase"] = torch.rand(1, T, H, D, generator=gen) * 6.28 - 3.14
    parts, m = phasor_memory_decayed(**inputs)
    assert torch.isfinite(parts).all() and torch.isfinite(m).all()
    assert parts.abs().max() < 10 * inputs["v"].abs().max()


def test_bad_arguments():
    inputs = _inputs(5)
    with pytest.raises(ValueError, match="log_decay must have shape"):
        phasor_memory_decayed(**dict(inputs, log_decay=inputs["log_decay"][:2]))
    with pytest.raises(ValueError, match="keep must have shape"):
        phasor_memory_decayed(**inputs, keep=torch.ones(B, 4, dtype=torch.bool))


def _resets(T: int) -> torch.Tensor:
    """[B, T] bool: row 0 at t = 0, twice in a row, on both sides of the scan's 16-step chunks
    and of 64-step tiles; row 1 mid-sequence and at its last token."""
    reset = torch.zeros(B, T, dtype=torch.bool)
    for row, ts in ((0, (0, 5, 6, 15, 16, 63, 64)), (1, (T // 2, T - 1))):
        reset[row, [t for t in ts if 0 < t < T or (t == 0 and row == 0)]] = True
    return reset


@pytest.mark.parametrize("padded", [False, True], ids=["dense", "padded"])
@pytest.mark.parametrize("T", [1, 2, 37, 70])
def test_fast_form_equals_the_loop_with_resets(T, padded, backend):
    inputs = _inputs(T)
    extra = {"reset": _resets(T)}
    if padded:
        keep = torch.rand(B, T, generator=torch.Generator().manual_seed(2)) > 0.3
        inputs["v"] = torch.where(keep[..., None, None], inputs["v"], 0.0)
        extra.update(keep=keep, counts=(keep.cumsum(1) - 1).clamp(min=0) + 4.0)
    ref = _run(phasor_memory_decayed_ref, inputs, offset=4, **extra)
    _assert_same(_run(phasor_memory_decayed, inputs, offset=4, backend="torch", **extra), ref,
                 1e-12)
    f32 = {k: x.float() if k in ("v", "key_phase", "query_phase") else x
           for k, x in inputs.items()}
    f32["initial_state"] = inputs["initial_state"].to(torch.complex64)
    got = _run(phasor_memory_decayed, f32, offset=4, backend=backend, **extra)
    assert all(torch.isfinite(g).all() for g in got[2].values())
    _assert_same(got, ref, 1e-5)


def test_reset_runs_each_segment_alone():
    """The loop with resets is each segment run alone at its own offset from a zero state (the
    first from the initial state): outputs, final memory and every gradient."""
    T, offset = 40, 4
    inputs, reset = _inputs(T), _resets(T)
    packed = _run(phasor_memory_decayed_ref, inputs, offset=offset, reset=reset)

    def alone(v, key_phase, query_phase, initial_state, **shared):
        rows, states = [], []
        for row in range(B):
            cuts = [0, *[t for t in reset[row].nonzero()[:, 0].tolist() if t > 0], T]
            outs, m = [], initial_state[row:row + 1]
            for start, stop in zip(cuts[:-1], cuts[1:], strict=True):
                part = [x[row:row + 1, start:stop] for x in (v, key_phase, query_phase)]
                r, m = phasor_memory_decayed_ref(*part, offset=offset + start,
                                                 initial_state=None if reset[row, start] else m,
                                                 **shared)
                outs.append(r)
            rows.append(torch.cat(outs, 1))
            states.append(m)
        return torch.cat(rows), torch.cat(states)

    _assert_same(_run(alone, inputs), packed, 1e-13)


def test_bad_resets():
    inputs = _inputs(5)
    with pytest.raises(ValueError, match=r"reset must have shape \(2, 5\)"):
        phasor_memory_decayed(**inputs, reset=torch.ones(B, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="reset must be a bool tensor"):
        phasor_memory_decayed_ref(**inputs, reset=torch.ones(B, 5))
