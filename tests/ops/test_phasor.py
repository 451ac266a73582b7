from __future__ import annotations

import math
from fractions import Fraction
from functools import partial

import pytest
import torch

from hololm.errors import BackendUnavailableError
from hololm.ops.cumsum import blocked_cumsum
from hololm.ops.phasor import (
    cpu_form,
    generate_random_phasors,
    phasor_memory,
    phasor_memory_parts,
    phasor_memory_ref,
    phasor_memory_step,
    position_phases,
    rope_frequencies,
    torch_form,
)
from tests.helpers import assert_close, by_backend, rel_rms

B, H, D = 2, 2, 8
NAMES = ("v", "key_phase", "query_phase", "query_shift", "initial_state")


BACKENDS = ("cpu", "torch", "triton")  # a test taking `backend` runs on each (conftest.py)
KERNEL = cpu_form.KERNEL


def make_inputs(steps: int, dtype=torch.float32, shift=True, state=True) -> dict:
    phase = lambda: math.pi * torch.tanh(torch.randn(B, steps, H, D))  # noqa: E731
    ins = {"v": torch.randn(B, steps, H, D), "key_phase": phase(), "query_phase": phase(),
           "query_shift": 3 * torch.randn(H) if shift else None,
           "initial_state": torch.randn(B, H, D, dtype=torch.complex64) if state else None}
    return {k: x if x is None or x.is_complex() else x.to(dtype) for k, x in ins.items()}


def leaves(ins: dict, real_dtype=None) -> dict:
    """Fresh leaf copies (optionally cast, complex follows the real dtype's width)."""
    out = {}
    for k, x in ins.items():
        if x is not None and real_dtype is not None:
            wide = real_dtype == torch.float64
            x = x.to((torch.complex128 if wide else torch.complex64) if x.is_complex()
                     else real_dtype)
        out[k] = None if x is None else x.detach().clone().requires_grad_()
    return out


def run(fn, ins: dict, freqs, offset=0, **backend):
    return fn(ins["v"], ins["key_phase"], ins["query_phase"], freqs, offset=offset,
              query_shift=ins["query_shift"], initial_state=ins["initial_state"], **backend)


def run_steps(ins: dict, freqs, offset=0, backend="auto"):
    outs, state = [], ins["initial_state"]
    for t in range(ins["v"].shape[1]):
        out, state = phasor_memory_step(ins["v"][:, t], ins["key_phase"][:, t],
                                        ins["query_phase"][:, t], state, offset + t, freqs,
                                        ins["query_shift"], backend=backend)
        outs.append(out)
    return torch.stack(outs, 1), state


def grads(out, state, ins: dict, seed=1) -> dict:
    gen = torch.Generator().manual_seed(seed)
    w_out = torch.randn(out.shape, generator=gen, dtype=torch.complex128).to(out.dtype)
    w_state = torch.randn(state.shape, generator=gen, dtype=torch.complex128).to(state.dtype)
    loss = (out * w_out.conj()).real.sum() + (state * w_state.conj()).real.sum()
    keys = [k for k in NAMES if ins[k] is not None]
    return dict(zip(keys, torch.autograd.grad(loss, [ins[k] for k in keys]), strict=True))


def check_against_ref64(fn, ins, freqs, offset, tol_out, tol_grad, what):
    """`fn` on `ins` vs the float64 reference on the same values upcast."""
    fast, ref = leaves(ins), leaves(ins, torch.float64)
    out, state = fn(fast, freqs, offset)
    out_ref, state_ref = run(phasor_memory_ref, ref, freqs, offset)
    assert out.dtype == torch.complex64 and state.dtype == torch.complex64
    assert_close(out, out_ref, tol_out, f"{what} output")
    assert_close(state, state_ref, tol_out, f"{what} state")
    g, g_ref = grads(out, state, fast), grads(out_ref, state_ref, ref)
    for k in g_ref:
        assert_close(g[k], g_ref[k], tol_grad, f"{what} grad {k}")


def forms(backend: str) -> dict:
    return {"fast": lambda ins, f, o: run(phasor_memory, ins, f, o, backend=backend),
            "step": partial(run_steps, backend=backend),
            "ref32": lambda ins, f, o: run(phasor_memory_ref, ins, f, o)}


@pytest.mark.parametrize("steps", [1, 2, 63, 64, 65, 257])
@pytest.mark.parametrize("positional", [True, False])
def test_forms_agree_fp32(steps, positional, backend):
    freqs = generate_random_phasors(H * D, seed=3).view(H, D) if positional else None
    ins = make_inputs(steps, shift=positional)
    on = forms(backend) if steps <= 65 else {"fast": forms(backend)["fast"]}  # slow loops
    for name, fn in on.items():
        check_against_ref64(fn, ins, freqs, 7, 1e-5, 1e-5, f"{name} T={steps}")


@pytest.mark.parametrize("steps", [63, 64, 65])
def test_fast_form_through_blocked_cumsum(steps, monkeypatch):
    # tiny test tensors dispatch to torch.cumsum; force the blocked path (tail padding included)
    monkeypatch.setattr(torch_form, "cumsum", lambda x, dim, reverse=False, overwrite=False:
                        blocked_cumsum(x, dim, 16, reverse=reverse, overwrite=overwrite))
    ins = make_inputs(steps)
    check_against_ref64(forms("torch")["fast"], ins, generate_random_phasors(H * D), 5, 1e-5, 1e-5,
                        f"blocked T={steps}")


def test_float64_inputs_compute_in_float64():
    freqs = generate_random_phasors(H * D, seed=2)
    ins = leaves(make_inputs(33), torch.float64)
    out, state = run(phasor_memory, ins, freqs, offset=11)
    out_ref, state_ref = run(phasor_memory_ref, ins, freqs, offset=11)
    assert out.dtype == torch.complex128 and state.dtype == torch.complex128
    assert_close(out, out_ref, 1e-12, "float64 output")
    assert_close(state, state_ref, 1e-12, "float64 state")
    g, g_ref = grads(out, state, ins), grads(out_ref, state_ref, ins)
    for k in g_ref:
        assert_close(g[k], g_ref[k], 1e-12, f"float64 grad {k}")


def test_forms_agree_at_large_offset(backend):
    freqs = generate_random_phasors(H * D, seed=4)
    ins = make_inputs(40)
    for name, fn in forms(backend).items():
        check_against_ref64(fn, ins, freqs, 2**20 + 12345, 1e-5, 1e-5, name)


@pytest.mark.parametrize("steps", [2, 65, 257])
def test_bf16_inputs(steps, backend):
    # the same bf16-rounded values in float64 are the reference: float32 compute gives ~1e-6 on
    # outputs; gradients come back in bf16, so they carry its rounding (2^-9 relative)
    freqs = generate_random_phasors(H * D, seed=5)
    ins = make_inputs(steps, torch.bfloat16)
    check_against_ref64(forms(backend)["fast"], ins, freqs, 0, 1e-5, 6e-3, f"bf16 T={steps}")


def test_step_after_multi_token_prefill_and_chunked_continuation(backend):
    freqs = generate_random_phasors(H * D, seed=6)
    ins = make_inputs(50)
    full, full_state = run(phasor_memory, ins, freqs, offset=3, backend=backend)
    first = {k: x[:, :20] if k in NAMES[:3] else x for k, x in ins.items()}
    second = {k: x[:, 20:] if k in NAMES[:3] else x for k, x in ins.items()}
    out1, state1 = run(phasor_memory, first, freqs, offset=3, backend=backend)
    out2, state2 = phasor_memory(second["v"], second["key_phase"], second["query_phase"], freqs,
                                 offset=23, query_shift=ins["query_shift"], initial_state=state1,
                                 backend=backend)
    assert_close(torch.cat([out1, out2], 1), full, 1e-6, "chunked output")
    assert_close(state2, full_state, 1e-6, "chunked state")
    out3, state3 = run_steps({**second, "initial_state": state1}, freqs, offset=23, backend=backend)
    assert_close(torch.cat([out1, out3], 1), full, 1e-6, "prefill + steps output")
    assert_close(state3, full_state, 1e-6, "prefill + steps state")


def test_causality(backend):
    freqs = generate_random_phasors(H * D, seed=7)
    ins = make_inputs(70)
    t = 33
    bumped = dict(ins)
    for k in NAMES[:3]:
        bumped[k] = ins[k].clone()
        bumped[k][:, t + 1:] += torch.randn_like(bumped[k][:, t + 1:])
    for fn in (partial(phasor_memory, backend=backend), phasor_memory_ref):
        out, _ = run(fn, ins, freqs)
        out_bumped, _ = run(fn, bumped, freqs)
        assert (out[:, :t + 1] - out_bumped[:, :t + 1]).abs().max() <= 1e-6
        assert (out[:, t + 1:] - out_bumped[:, t + 1:]).abs().max() > 1e-2


def test_flat_and_float32_freqs(backend):
    ins = make_inputs(9)
    freqs = generate_random_phasors(H * D, seed=8)
    out, state = run(phasor_memory, ins, freqs.view(H, D), backend=backend)
    out_flat, state_flat = run(phasor_memory, ins, freqs, backend=backend)
    assert torch.equal(out, out_flat) and torch.equal(state, state_flat)
    out32, _ = run(phasor_memory, ins, freqs.float(), backend=backend)
    assert_close(out32, out, 1e-5, "float32 freqs")


def test_autocast_does_not_change_result(backend):
    freqs = generate_random_phasors(H * D, seed=9)
    ins = make_inputs(300)
    out, state = run(phasor_memory, ins, freqs, backend=backend)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_ac, state_ac = run(phasor_memory, ins, freqs, backend=backend)
    assert out_ac.dtype == torch.complex64
    assert_close(out_ac, out, 1e-6, "autocast output")
    assert_close(state_ac, state, 1e-6, "autocast state")


def _pi(digits: int = 60) -> Fraction:
    """π to `digits` decimals by Machin's formula π = 16 atan(1/5) − 4 atan(1/239)."""
    scale = 10 ** digits

    def atan_inv(x: int) -> int:
        power, total, k, sign = scale // x, scale // x, 1, -1
        while power:
            power //= x * x
            total += sign * (power // (2 * k + 1))
            sign, k = -sign, k + 1
        return total

    return Fraction(16 * atan_inv(5) - 4 * atan_inv(239), scale)


def _circular_err(a: torch.Tensor, b: torch.Tensor) -> float:
    diff = a.double() - b.double()
    return torch.atan2(diff.sin(), diff.cos()).abs().max().item()


@pytest.mark.parametrize("position", [2**20, 10**6 + 7, 2**31 - 1])
def test_position_phases_exact_at_long_range(position):
    freqs = generate_random_phasors(64, seed=10)
    pi = _pi()
    exact = []
    for w in freqs.tolist():
        angle = Fraction(w) * position
        exact.append(float(angle - 2 * pi * math.floor((angle + pi) / (2 * pi))))
    exact = torch.tensor(exact, dtype=torch.float64)
    got64 = position_phases(torch.tensor([position]), freqs, dtype=torch.float64)[0]
    got32 = position_phases(position, freqs)
    assert got32.shape == (64,) and got32.dtype == torch.float32
    assert got64.min() >= -math.pi and got64.max() < math.pi
    bound64 = position * math.pi * 2.0**-52 + 1e-12  # one float64 ulp of p·π
    assert _circular_err(got64, exact) < bound64
    assert _circular_err(got32, exact) < bound64 + 2.0**-22  # plus float32 rounding near π
    # the test has teeth: the naive float32 product is off by up to ~0.1 rad at p = 2^20
    naive = torch.tensor(float(position), dtype=torch.float32) * freqs.float()
    assert _circular_err(naive, exact) > 1e-2


@pytest.mark.parametrize("offset", [2**20, 10**6])
def test_retrieval_exact_at_million_positions(offset, backend):
    """Bind one value at p_s, query it back at p_t = p_s + 3 with query_shift δ = 3: every
    channel must read v / sqrt(p_t + 1) (a single item has no crosstalk)."""
    heads, dim, steps, s = 2, 64, 5, 1
    freqs = generate_random_phasors(heads * dim, seed=11).view(heads, dim)
    v = torch.zeros(1, steps, heads, dim)
    v[:, s] = torch.randn(heads, dim)
    key_phase = math.pi * torch.tanh(torch.randn(1, steps, heads, dim))
    query_phase = torch.zeros(1, steps, heads, dim)
    query_phase[:, s + 3] = key_phase[:, s]
    shift = torch.full((heads,), 3.0)
    expected = v[0, s] / math.sqrt(offset + s + 3 + 1)
    for fn in (partial(phasor_memory, backend=backend), phasor_memory_ref):
        out, _ = fn(v, key_phase, query_phase, freqs, offset=offset, query_shift=shift)
        assert_close(out[0, s + 3], expected.to(torch.complex64), 1e-5, str(fn))
    # the same read-out with naive float32 t * ω phases is garbage at this range
    w = freqs.float()
    p_s, p_t = torch.tensor(float(offset + s)), torch.tensor(float(offset + s + 3))
    naive_phase = p_s * w - (p_t * w - 3.0 * w)
    naive = torch.polar(v[0, s], naive_phase) / math.sqrt(offset + s + 4)
    assert rel_rms(naive, expected.to(torch.complex64)) > 1e-2


def test_frequency_generators():
    state = torch.random.get_rng_state()
    a, b = generate_random_phasors(256, seed=1), generate_random_phasors(256, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state), "global RNG must be untouched"
    assert a.dtype == torch.float64 and a.shape == (256,) and torch.equal(a, b)
    assert not torch.equal(a, generate_random_phasors(256, seed=2))
    assert a.abs().max() <= math.pi and a.abs().max() > 3.0
    r = rope_frequencies(8, base=10000.0)
    assert r.dtype == torch.float64 and r[0] == 1.0
    assert_close(r[1:] / r[:-1], torch.full((7,), 10000.0 ** (-1 / 8), dtype=torch.float64),
                 1e-14, "geometric ratio")


def test_content_only_ignores_offset_except_scale(backend):
    ins = make_inputs(6, shift=False, state=False)
    out0, _ = run(phasor_memory, ins, None, offset=0, backend=backend)
    out5, _ = run(phasor_memory, ins, None, offset=5, backend=backend)
    scale = torch.sqrt(torch.arange(1, 7.0) / torch.arange(6, 12.0))[:, None, None]
    assert_close(out5, out0 * scale, 1e-6, "content-only offset")


def test_bad_arguments():
    ins = make_inputs(4)
    v, kp, qp = ins["v"], ins["key_phase"], ins["query_phase"]
    freqs = generate_random_phasors(H * D)
    with pytest.raises(ValueError, match="key_phase"):
        phasor_memory(v, kp[:, :3], qp, freqs)
    with pytest.raises(ValueError, match="query_phase"):
        phasor_memory(v, kp, qp[..., :3], freqs)
    with pytest.raises(TypeError, match="v must be a real floating"):
        phasor_memory(v.long(), kp, qp, freqs)
    with pytest.raises(TypeError, match="key_phase"):
        phasor_memory(v, kp.int(), qp, freqs)
    with pytest.raises(ValueError, match="v must have 4 dims"):
        phasor_memory(v[:, 0], kp[:, 0], qp[:, 0], freqs)
    with pytest.raises(ValueError, match="time step"):
        phasor_memory(v[:, :0], kp[:, :0], qp[:, :0], freqs)
    with pytest.raises(ValueError, match="freqs"):
        phasor_memory(v, kp, qp, freqs[:-1])
    with pytest.raises(TypeError, match="freqs"):
        phasor_memory(v, kp, qp, torch.arange(H * D))
    with pytest.raises(ValueError, match="offset"):
        phasor_memory(v, kp, qp, freqs, offset=-1)
    with pytest.raises(ValueError, match="offset"):
        phasor_memory_ref(v, kp, qp, freqs, offset=1.5)
    with pytest.raises(ValueError, match="query_shift"):
        phasor_memory(v, kp, qp, freqs, query_shift=torch.zeros(H + 1))
    with pytest.raises(ValueError, match="query_shift"):
        phasor_memory(v, kp, qp, None, query_shift=torch.zeros(H))
    with pytest.raises(TypeError, match="initial_state"):
        phasor_memory(v, kp, qp, freqs, initial_state=torch.zeros(B, H, D))
    with pytest.raises(ValueError, match="initial_state"):
        phasor_memory(v, kp, qp, freqs, initial_state=torch.zeros(B, H, D + 1, dtype=torch.cfloat))
    with pytest.raises(ValueError, match="position"):
        phasor_memory_step(v[:, 0], kp[:, 0], qp[:, 0], None, -1, freqs)
    with pytest.raises(TypeError, match="state"):
        phasor_memory_step(v[:, 0], kp[:, 0], qp[:, 0], torch.zeros(B, H, D), 0, freqs)
    with pytest.raises(ValueError, match="hd_dim"):
        generate_random_phasors(0)
    with pytest.raises(TypeError, match="positions"):
        position_phases(torch.zeros(3, dtype=torch.cfloat), freqs)


def test_random_phasors_ignore_the_default_device():
    """A seed gives the same frequencies under `with torch.device(...)` (the speed bench builds
    its op inputs that way on CUDA; a CPU generator on the default device used to raise)."""
    expect = generate_random_phasors(16, seed=3)
    with torch.device("meta"):
        got = generate_random_phasors(16, seed=3, device="cpu")
    assert torch.equal(got, expect)


def _parts_as_complex(*args, **kwargs):
    parts, state = phasor_memory_parts(*args, **kwargs)
    return torch.complex(parts[:, :, 0], parts[:, :, 1]), state


@pytest.mark.parametrize("fn", [phasor_memory, _parts_as_complex], ids=["complex", "planar"])
@pytest.mark.parametrize("positional", [True, False])
@pytest.mark.parametrize("backend", ["cpu", "triton"], indirect=True)
def test_fused_kernel_equals_torch_form(positional, fn, backend):
    """The fused kernel against the PyTorch form on the same inputs, in both output layouts:
    outputs, final state and every gradient (shift and initial state included), odd T across
    position blocks, channels split over threads (bit-identical to one call: each channel is
    computed by one call)."""
    heads, dim, steps = 2, 40, 301
    gen = torch.Generator().manual_seed(12)
    freqs = generate_random_phasors(heads * dim, seed=13) if positional else None
    ins = {"v": torch.randn(B, steps, heads, dim, generator=gen),
           "key_phase": math.pi * torch.tanh(torch.randn(B, steps, heads, dim, generator=gen)),
           "query_phase": math.pi * torch.tanh(torch.randn(B, steps, heads, dim, generator=gen)),
           "query_shift": 3 * torch.randn(heads, generator=gen) if positional else None,
           "initial_state": torch.randn(B, heads, dim, dtype=torch.complex64, generator=gen)}

    def compute(backend, threads):
        leaf = leaves(ins)
        out, state = run(fn, leaf, freqs, offset=5, backend=backend, threads=threads)
        return out, state, grads(out, state, leaf)

    results = by_backend(compute, backend)
    (out, state, g), (out_n, state_n, g_n) = results["torch"], results[backend]
    assert_close(out_n, out, 1e-6, f"{backend} output")
    assert_close(state_n, state, 1e-6, f"{backend} state")
    for k in g:  # δ's gradient is a sum over B·T terms that partly cancel: more rounding
        assert_close(g_n[k], g[k], 1e-5 if k == "query_shift" else 1e-6, f"{backend} grad {k}")
    if backend == "triton":
        return
    out_s, state_s, g_s = results["cpu split"]
    assert torch.equal(out_s, out_n) and torch.equal(state_s, state_n)
    assert all(torch.equal(g_s[k], g_n[k]) for k in g)


@pytest.mark.parametrize("backend", ["cpu", "triton"], indirect=True)
def test_native_running_sums_are_compensated(backend):
    """The kernel's running sums keep float32 accuracy over a long drifting stream: at 2^18
    steps the state is within 3e-7 of float64 (a plain float32 running sum measured 1.3e-5
    here; flags such as -ffast-math would silently drop the compensation). The Triton kernel
    (2^14 steps: the interpreter is slow) starts each tile from a float64 sum of the others."""
    steps, dim = 2**14 if backend == "triton" else 2**18, 16  # the interpreter is slow
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(1, steps, 1, dim, generator=gen) + 0.5
    phases = math.pi * torch.tanh(torch.randn(2, 1, steps, 1, dim, generator=gen))
    freqs = generate_random_phasors(dim, seed=1) * 1e-3  # slow positions: the sums drift
    _, state = phasor_memory(v, phases[0], phases[1], freqs, backend=backend)
    _, state64 = phasor_memory(v.double(), phases[0].double(), phases[1].double(), freqs)
    assert_close(state, state64, 3e-7, "state after 2^18 steps")


@pytest.mark.parametrize("backend", ["cpu", "triton"], indirect=True)
def test_native_kernel_flags_meaningless_phases_with_nan(backend):
    """A float32 phase of 2^23 rad or more (or inf / NaN) has no fractional part: the kernel
    gives NaN from there on in that channel, not a silently wrong value; the rest is unchanged."""
    ins = make_inputs(20, shift=False, state=False)
    freqs = generate_random_phasors(H * D, seed=14)
    clean, _ = run(phasor_memory, ins, freqs, backend=backend)
    for bad in (1e8, math.inf, math.nan):
        key_phase = ins["key_phase"].clone()
        key_phase[0, 5, 1, 3] = bad
        out, state = run(phasor_memory, {**ins, "key_phase": key_phase}, freqs, backend=backend)
        assert out[0, 5:, 1, 3].isnan().all() and state[0, 1, 3].isnan()
        out[0, 5:, 1, 3] = clean[0, 5:, 1, 3]
        assert torch.equal(out, clean)


@pytest.mark.parametrize("backend", ["reference", "torch", "cpu"])
def test_named_backends_match_reference(backend):
    """Every backend by name, complex and planar, against the float64 reference."""
    if backend == "cpu" and KERNEL.library() is None:
        pytest.skip("no C compiler")
    freqs = generate_random_phasors(H * D, seed=15)
    ins = make_inputs(40)
    check_against_ref64(forms(backend)["fast"], ins, freqs, 3, 1e-5, 1e-5, backend)
    parts, _ = run(phasor_memory_parts, ins, freqs, backend=backend)
    out, _ = run(phasor_memory, ins, freqs, backend=backend)
    assert_close(torch.complex(parts[:, :, 0], parts[:, :, 1]), out, 1e-7, "planar")


def test_unavailable_backends_say_why():
    ins, freqs = make_inputs(5), generate_random_phasors(H * D)
    wide = leaves(ins, torch.float64)
    with pytest.raises(BackendUnavailableError, match="phasor_memory: unknown backend 'fla'; "
                       "choose from auto, reference, torch, cpu, triton"):
        run(phasor_memory, ins, freqs, backend="fla")
    with pytest.raises(BackendUnavailableError, match="'cpu' is unavailable: .*float64"):
        run(phasor_memory, wide, freqs, backend="cpu")
    with pytest.raises(BackendUnavailableError, match="'triton' is unavailable: wrong dtype"):
        run(phasor_memory, wide, freqs, backend="triton")


# --- resets (packed documents): M_t = [¬reset_t] M_{t-1} + v_t κ_t ---------------------------

def make_resets(steps: int) -> torch.Tensor:
    """[B, T] bool: row 0 resets at t = 0, mid-tile, twice in a row (5, 6) and on both sides of
    the 64-step tiles / position blocks (63, 64, 128); row 1 mid-sequence and at its last token."""
    reset = torch.zeros(B, steps, dtype=torch.bool)
    for row, ts in ((0, (0, 5, 6, 63, 64, 128)), (1, (steps // 2, steps - 1))):
        reset[row, [t for t in ts if 0 < t < steps or (t == 0 and row == 0)]] = True
    return reset


def run_with_resets(fn, ins: dict, freqs, reset, offset=0, **backend):
    return fn(ins["v"], ins["key_phase"], ins["query_phase"], freqs, offset=offset,
              query_shift=ins["query_shift"], initial_state=ins["initial_state"], reset=reset,
              **backend)


def test_reset_runs_each_segment_alone():
    """The reference with resets is each segment run alone at its own offset, from a zero state
    (the first segment from the initial state): outputs, final state and every gradient."""
    steps, offset = 70, 9
    freqs = generate_random_phasors(H * D, seed=16)
    ins = make_inputs(steps)
    reset = make_resets(steps)
    packed = leaves(ins, torch.float64)
    out, state = run_with_resets(phasor_memory_ref, packed, freqs, reset, offset)
    alone = leaves(ins, torch.float64)
    rows, states = [], []
    for row in range(B):
        cuts = [0, *[t for t in reset[row].nonzero()[:, 0].tolist() if t > 0], steps]
        outs, m = [], alone["initial_state"][row:row + 1]
        for start, stop in zip(cuts[:-1], cuts[1:], strict=True):
            part = [alone[k][row:row + 1, start:stop] for k in NAMES[:3]]
            o, m = phasor_memory_ref(*part, freqs, offset=offset + start,
                                     query_shift=alone["query_shift"],
                                     initial_state=None if reset[row, start] else m)
            outs.append(o)
        rows.append(torch.cat(outs, 1))
        states.append(m)
    out_alone, state_alone = torch.cat(rows), torch.cat(states)
    assert_close(out_alone, out, 1e-14, "output")
    assert_close(state_alone, state, 1e-14, "state")
    g, g_alone = grads(out, state, packed), grads(out_alone, state_alone, alone)
    assert g["initial_state"][0].abs().max() == 0  # row 0 resets at t = 0
    for k in g:
        assert_close(g[k], g_alone[k], 1e-13, f"grad {k}")


# T = 1, 130, 257 in the slow suite: the Triton interpreter makes each a 10-25 s case
@pytest.mark.parametrize("steps", [pytest.param(1, marks=pytest.mark.slow), 2, 7, 65,
                                   pytest.param(130, marks=pytest.mark.slow),
                                   pytest.param(257, marks=pytest.mark.slow)])
@pytest.mark.parametrize("positional", [True, False])
def test_forms_agree_with_resets(steps, positional, backend):
    """Every form with resets against the float64 reference: outputs, final state and the
    gradients of every input, the initial state's included."""
    freqs = generate_random_phasors(H * D, seed=17).view(H, D) if positional else None
    ins = make_inputs(steps, shift=positional)
    reset = make_resets(steps)

    def fast(fn):
        return lambda ins, f, o: run_with_resets(fn, ins, f, reset, o, backend=backend)

    def steps_form(ins, f, o):
        outs, state = [], ins["initial_state"]
        for t in range(steps):
            out, state = phasor_memory_step(ins["v"][:, t], ins["key_phase"][:, t],
                                            ins["query_phase"][:, t], state, o + t, f,
                                            ins["query_shift"], reset=reset[:, t],
                                            backend=backend)
            outs.append(out)
        return torch.stack(outs, 1), state

    on = {"complex": fast(phasor_memory), "planar": fast(_parts_as_complex)}
    if steps <= 7:  # a slow loop (and T = 1 launches in Triton's interpreter); resets at 0, 5, 6
        on["step"] = steps_form
    for name, fn in on.items():
        fast_ins, ref = leaves(ins), leaves(ins, torch.float64)
        out, state = fn(fast_ins, freqs, 7)
        out_ref, state_ref = run_with_resets(phasor_memory_ref, ref, freqs, reset, 7)
        assert_close(out, out_ref, 1e-5, f"{name} T={steps} output")
        assert_close(state, state_ref, 1e-5, f"{name} T={steps} state")
        g, g_ref = grads(out, state, fast_ins), grads(out_ref, state_ref, ref)
        for k in g_ref:
            assert_close(g[k], g_ref[k], 1e-5, f"{name} T={steps} grad {k}")


@pytest.mark.parametrize("steps", [2, pytest.param(130, marks=pytest.mark.slow)])
def test_bf16_inputs_with_resets(steps, backend):
    """As `test_bf16_inputs`, with resets."""
    freqs = generate_random_phasors(H * D, seed=18)
    ins = make_inputs(steps, torch.bfloat16)
    reset = make_resets(steps)
    fast, ref = leaves(ins), leaves(ins, torch.float64)
    out, state = run_with_resets(phasor_memory, fast, freqs, reset, backend=backend)
    out_ref, state_ref = run_with_resets(phasor_memory_ref, ref, freqs, reset)
    assert_close(out, out_ref, 1e-5, "bf16 output")
    assert_close(state, state_ref, 1e-5, "bf16 state")
    g, g_ref = grads(out, state, fast), grads(out_ref, state_ref, ref)
    for k in g_ref:
        assert_close(g[k], g_ref[k], 6e-3, f"bf16 grad {k}")


def test_all_false_reset_is_no_reset(backend):
    """An all-False reset gives the memory without resets (up to the order of the additions:
    the reset paths sum by a scan or a masked product instead of a cumsum)."""
    freqs = generate_random_phasors(H * D, seed=19)
    ins = make_inputs(70)
    out, state = run(phasor_memory, ins, freqs, backend=backend)
    out_r, state_r = run_with_resets(phasor_memory, ins, freqs, torch.zeros(B, 70, dtype=bool),
                                     backend=backend)
    assert_close(out_r, out, 1e-6, "output")
    assert_close(state_r, state, 1e-6, "state")


def test_bad_resets():
    ins = make_inputs(4)
    v, kp, qp = ins["v"], ins["key_phase"], ins["query_phase"]
    freqs = generate_random_phasors(H * D)
    with pytest.raises(TypeError, match="reset must be a bool tensor"):
        phasor_memory(v, kp, qp, freqs, reset=torch.zeros(B, 4))
    with pytest.raises(TypeError, match="reset must be a torch.Tensor"):
        phasor_memory(v, kp, qp, freqs, reset=[[True] * 4] * B)
    with pytest.raises(ValueError, match=r"reset must have shape \(2, 4\)"):
        phasor_memory(v, kp, qp, freqs, reset=torch.zeros(B, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"reset must have shape \(2, 4\)"):
        phasor_memory_ref(v, kp, qp, freqs, reset=torch.zeros(B, 4, 1, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"reset must have shape \(2,\)"):
        phasor_memory_step(v[:, 0], kp[:, 0], qp[:, 0], None, 0, freqs,
                           reset=torch.zeros(B, 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="reset must be on v's device"):
        phasor_memory(v, kp, qp, freqs, reset=torch.zeros(B, 4, dtype=torch.bool, device="meta"))
