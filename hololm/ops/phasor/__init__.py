"""Phasor-FHRR holographic memory: complex diagonal binding, cumulative superposition and
conjugate-query retrieval (Holo-Transformer's LongAttention).

Per head h and channel d, with p_t = offset + t the absolute 0-based position and ω the fixed
frequencies (`freqs`, shape [H, D]):

    κ_s = exp(i (φ_s + p_s ω))                 key = content ⊙ position ("binding")
    M_t = M_0 + Σ_{s ≤ t} v_s κ_s              memory: plain superposition, no decay
    q_t = exp(i (ψ_t + (p_t − δ_h) ω))         query; δ_h is an optional per-head position shift
    r_t = M_t ⊙ conj(q_t) / sqrt(p_t + 1)      retrieval, scaled against random-walk growth

φ = key_phase, ψ = query_phase (content phases in radians), v = value (real). A query with
ψ_t = φ_s and δ = p_t − p_s reads back v_s / sqrt(p_t + 1) plus crosstalk from the other items.
With `freqs=None` the binding is content-only (no position term, δ not allowed).

Resets (packed documents): `reset` [B, T] bool (None: none) marks the tokens where a row's
memory restarts, M_t = [¬reset_t] M_{t-1} + v_t κ_t: the state entering t (M_0 at t = 0, else
the previous token's) is dropped, and the gradient of what is dropped is 0. Positions and the
scale are left as given (p_t = offset + t), so a segment of a row equals that segment run alone
from a zero state at its own offset (the first segment from M_0). Only M is reset: a caller
whose documents restart their positions keeps the absolute positions for the phases (each κ_s
and q_t of a document carry the same constant p_start·ω, which the retrieval cancels up to the
rounding of the phases) and rescales by its own count, as hololm/layers/phasor.py does.

Exactness at long range: p ω at p = 2^20 is ~3e6 rad, where a float32 ulp is 0.25 rad, so a
float32 `t * ω` scrambles the phase. Position phases are computed in float64, wrapped to
[-π, π) and only then cast (`position_phases`; the fast form adds two such exact phases, of
the block and of the position within it, `_position_phase_range`); no [max_seq_len, D] table is
ever built.

The fast form works on real tensors: with θ = φ + pω and ψ' = ψ + (p − δ)ω,
    (A, B) = cumsum(v cos θ, v sin θ) + (Re M_0, Im M_0)
    r = (A cos ψ' + B sin ψ', B cos ψ' − A sin ψ') / sqrt(p + 1)
which avoids complex autograd (slower) and complex + autocast issues; complex tensors appear
only at the boundary (`phasor_memory_parts` returns the real parts, for layers that need no
complex tensor at all). The forms, side by side here, by `backend=` (hololm/ops/backends.py):
"reference" (reference.py, a loop over T in complex arithmetic), "torch" (torch_form.py, with
a hand-written backward), "cpu" (cpu_form.py + phasor.c: one fused C loop per direction,
float32) and "triton" (triton_form.py, float32 on CUDA). "auto" takes Triton on CUDA and C on
CPU in float32, the PyTorch form for float64, machines without a C compiler and GPUs without
triton. common.py holds the frequencies and position phases they share.

Phase range: in float32, phases beyond 2^23 rad have no fractional part left (one float32 ulp
is 1 rad there). The fused kernels (C and Triton) return NaN for such angles (and for inf /
NaN phases) instead of a meaningless value; the PyTorch form returns the sine of the rounded
angle. Content phases of a layer (π·tanh) plus position phases stay below 3π.

Dtypes: inputs may be float16/bfloat16/float32/float64. The computation runs in float32 with a
complex64 output and state, unless v, key_phase, query_phase or initial_state is 64-bit, in
which case it runs in float64 and returns complex128 (for references).
"""
from __future__ import annotations

import torch

from hololm.ops import backends
from hololm.ops._validate import require_nonnegative_int
from hololm.ops.phasor import cpu_form
from hololm.ops.phasor.common import (
    POSITION_BLOCK,
    _check_reset,
    _position_phase_range,
    _position_phase_tables,
    _prepare,
    _shift_phase,
    generate_random_phasors,
    position_phases,
    rope_frequencies,
)
from hololm.ops.phasor.reference import phasor_memory_ref
from hololm.ops.phasor.torch_form import _PhasorMemory

BACKENDS = ("reference", "torch", "cpu", "triton")
__all__ = ["BACKENDS", "POSITION_BLOCK", "generate_random_phasors", "phasor_memory",
           "phasor_memory_parts", "phasor_memory_ref", "phasor_memory_step", "position_phases",
           "rope_frequencies"]


@torch.compiler.disable  # see hololm/ops/__init__.py
def _fast_form(v, key_phase, query_phase, freqs, offset, query_shift, initial_state, reset,
               complex_out: bool, backend: str, threads: int | None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """`phasor_memory_parts` (planar parts [B, T, 2, H, D]) and `phasor_memory` (complex
    [B, T, H, D]) on their backend, with the final memory as complex [B, H, D]."""
    require_nonnegative_int("offset", offset)
    dtype, freqs_hd = _prepare(v, key_phase, query_phase, freqs, query_shift, initial_state,
                               ndim=4, state_name="initial_state")
    reset = _check_reset(reset, v, 4)
    backend, lib = backends.select("phasor_memory", backend, BACKENDS, v, dtype, cpu_form.KERNEL)
    if backend == "reference":
        out, last = phasor_memory_ref(v, key_phase, query_phase, freqs, offset=offset,
                                      query_shift=query_shift, initial_state=initial_state,
                                      reset=reset)
        return (out if complex_out else torch.stack((out.real, out.imag), dim=2)), last
    freqs, steps = freqs_hd, v.shape[1]
    positions = torch.arange(offset, offset + steps, dtype=torch.float64, device=v.device)
    scale = (positions + 1).rsqrt().to(dtype)  # [T]
    shift = None if query_shift is None else _shift_phase(query_shift, freqs, dtype)  # [H, D]
    m0 = None
    if initial_state is not None:
        m0 = initial_state.to(torch.complex128 if dtype == torch.float64 else torch.complex64)
        m0 = torch.stack((m0.real, m0.imag), dim=1)  # [B, 2, H, D]
    with torch.autocast(v.device.type, enabled=False):
        if backend in ("cpu", "triton"):
            tables = (None if freqs is None
                      else _position_phase_tables(offset, steps, freqs, dtype))
            if backend == "triton":
                from hololm.ops.phasor.triton_form import PhasorMemoryTriton

                out, last = PhasorMemoryTriton.apply(v, key_phase, query_phase, shift, m0,
                                                     tables, scale, reset, complex_out)
            else:
                out, last = cpu_form._PhasorMemoryNative.apply(
                    v, key_phase, query_phase, shift, m0, tables, scale, reset, lib,
                    complex_out, threads)
            if complex_out:  # [B, T, H, D, 2] written interleaved: a view, no extra pass
                out = torch.view_as_complex(out)
        else:
            v = v.to(dtype)
            if freqs is not None:
                # exact float64 wraps summed to (−2π, 2π); the sums with content phases stay
                # small enough (|θ|, |ψ| < 3π for content phases in [-π, π]) for float32
                # cos/sin. Half-precision phases are promoted by the add itself.
                pos = _position_phase_range(offset, steps, freqs, dtype)  # [T, H, D]
                theta = key_phase + pos
                psi = query_phase + (pos if shift is None else pos - shift)
            else:
                theta, psi = key_phase.to(dtype), query_phase.to(dtype)
            out, last = _PhasorMemory.apply(v, theta, psi, scale[:, None, None], m0, reset)
            if complex_out:
                out = torch.complex(out[:, :, 0], out[:, :, 1])
    return out, torch.complex(last[:, 0], last[:, 1])


def phasor_memory_parts(v: torch.Tensor, key_phase: torch.Tensor, query_phase: torch.Tensor,
                        freqs: torch.Tensor | None = None, *, offset: int = 0,
                        query_shift: torch.Tensor | None = None,
                        initial_state: torch.Tensor | None = None,
                        reset: torch.Tensor | None = None, backend: str = "auto",
                        threads: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`phasor_memory` with the retrieval as real parts: (parts [B, T, 2, H, D] with
    parts[:, :, 0] = Re r and parts[:, :, 1] = Im r, M_T [B, H, D] complex). A layer that feeds
    [Re r, Im r] to a norm uses `parts.flatten(2)` directly, without complex tensors."""
    return _fast_form(v, key_phase, query_phase, freqs, offset, query_shift, initial_state,
                      reset, False, backend, threads)


def phasor_memory(v: torch.Tensor, key_phase: torch.Tensor, query_phase: torch.Tensor,
                  freqs: torch.Tensor | None = None, *, offset: int = 0,
                  query_shift: torch.Tensor | None = None,
                  initial_state: torch.Tensor | None = None,
                  reset: torch.Tensor | None = None, backend: str = "auto",
                  threads: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The memory on `backend` (one of `BACKENDS` or "auto", see the module docstring); the
    fast ones run without a loop over T. `threads`: how many ways the C kernels split the work
    (None: by its size, `kernels.run_split`).
    v, key_phase, query_phase [B, T, H, D], reset [B, T] bool (None: no reset; see the module
    docstring) → (r [B, T, H, D], M_T [B, H, D]) complex."""
    return _fast_form(v, key_phase, query_phase, freqs, offset, query_shift, initial_state,
                      reset, True, backend, threads)


def phasor_memory_step(v: torch.Tensor, key_phase: torch.Tensor, query_phase: torch.Tensor,
                       state: torch.Tensor | None, position: int,
                       freqs: torch.Tensor | None = None,
                       query_shift: torch.Tensor | None = None,
                       reset: torch.Tensor | None = None, backend: str = "auto",
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoding step at absolute `position`: v, key_phase, query_phase [B, H, D], the
    state M_{t-1} [B, H, D] (None = empty) and reset [B] bool (True: the row's state is
    dropped before this token, None: no reset) → (r_t [B, H, D], M_t [B, H, D]) complex."""
    require_nonnegative_int("position", position)
    _prepare(v, key_phase, query_phase, freqs, query_shift, state, ndim=3, state_name="state")
    reset = _check_reset(reset, v, 3)
    out, state = phasor_memory(v[:, None], key_phase[:, None], query_phase[:, None], freqs,
                               offset=position, query_shift=query_shift, initial_state=state,
                               reset=None if reset is None else reset[:, None], backend=backend)
    return out[:, 0], state
