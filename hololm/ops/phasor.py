"""Phasor-FHRR holographic memory: complex diagonal binding, cumulative superposition and
conjugate-query retrieval (Holo-Transformer LongAttention, seeds 000/001).

Per head h and channel d, with p_t = offset + t the absolute 0-based position and ω the fixed
frequencies (`freqs`, shape [H, D]):

    κ_s = exp(i (φ_s + p_s ω))                 key = content ⊙ position ("binding")
    M_t = M_0 + Σ_{s ≤ t} v_s κ_s              memory: plain superposition, no decay
    q_t = exp(i (ψ_t + (p_t − δ_h) ω))         query; δ_h is an optional per-head position shift
    r_t = M_t ⊙ conj(q_t) / sqrt(p_t + 1)      retrieval, scaled against random-walk growth

φ = key_phase, ψ = query_phase (content phases in radians), v = value (real). A query with
ψ_t = φ_s and δ = p_t − p_s reads back v_s / sqrt(p_t + 1) plus crosstalk from the other items.
With `freqs=None` the binding is content-only (no position term, δ not allowed).

Exactness at long range: p ω at p = 2^20 is ~3e6 rad, where a float32 ulp is 0.25 rad, so a
float32 `t * ω` scrambles the phase. Position phases are computed in float64, wrapped to
[-π, π) and only then cast (`position_phases`); no [max_seq_len, D] table is ever built.

The fast form works on real tensors: with θ = φ + pω and ψ' = ψ + (p − δ)ω,
    (A, B) = cumsum(v cos θ, v sin θ) + (Re M_0, Im M_0)
    r = (A cos ψ' + B sin ψ', B cos ψ' − A sin ψ') / sqrt(p + 1)
which avoids complex autograd (slower) and complex + autocast issues; complex tensors appear
only at the boundary. The reference is a loop over T in complex arithmetic.

Dtypes: inputs may be float16/bfloat16/float32/float64. The computation runs in float32 with a
complex64 output and state, unless v, key_phase, query_phase or initial_state is 64-bit, in
which case it runs in float64 and returns complex128 (for references).
"""

from __future__ import annotations

import math

import torch

from hololm.ops._validate import (
    require_nonnegative_int,
    require_positive_int,
    require_shape,
    require_state,
    require_tensor,
)
from hololm.ops.cumsum import cumsum


def generate_random_phasors(hd_dim: int, seed: int = 0, *, max_freq: float = math.pi,
                            device: torch.device | str | None = None) -> torch.Tensor:
    """Random Fourier frequencies ω ~ U(-max_freq, max_freq), float64 [hd_dim], deterministic
    for a seed. At integer positions e^{ipω} is 2π-periodic in ω, so U(-π, π) (the default)
    already covers every distinct phasor."""
    require_positive_int("hd_dim", hd_dim)
    if not max_freq > 0:
        raise ValueError(f"max_freq must be positive, got {max_freq!r}")
    gen = torch.Generator().manual_seed(seed)
    freqs = (torch.rand(hd_dim, generator=gen, dtype=torch.float64) * 2 - 1) * max_freq
    return freqs.to(device)


def rope_frequencies(hd_dim: int, base: float = 10000.0, *,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """RoPE-style geometric frequencies ω_j = base^(-j / hd_dim), float64 [hd_dim]: one
    frequency per complex channel, spanning 1 .. 1/base like RoPE does over its channel pairs."""
    require_positive_int("hd_dim", hd_dim)
    if not base > 1:
        raise ValueError(f"base must be > 1, got {base!r}")
    j = torch.arange(hd_dim, dtype=torch.float64)
    return (base ** (-j / hd_dim)).to(device)


def _wrap(angle: torch.Tensor) -> torch.Tensor:
    """Angle modulo 2π into [-π, π)."""
    return torch.remainder(angle + math.pi, 2 * math.pi) - math.pi


def position_phases(positions: torch.Tensor | int, freqs: torch.Tensor, *,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(positions ⊗ freqs) wrapped to [-π, π): shape [*positions.shape, *freqs.shape].

    The product and the wrap run in float64, then the result is cast to `dtype`. The error is
    about p·|ω|·2^-53 rad: 4e-10 at p = 2^20, 1e-6 at p = 2^31, the float32 resolution of the
    result (a float32 product p·ω is already off by ~0.1 rad at p = 2^20)."""
    require_tensor("freqs", freqs)
    if isinstance(positions, int) and not isinstance(positions, bool):
        positions = torch.tensor(positions, dtype=torch.float64, device=freqs.device)
    if not isinstance(positions, torch.Tensor) or positions.is_complex():
        raise TypeError(f"positions must be an int or a real tensor, got {type(positions)}")
    p = positions.to(torch.float64).reshape(*positions.shape, *([1] * freqs.dim()))
    return _wrap(p * freqs.to(torch.float64)).to(dtype)


def _prepare(v, key_phase, query_phase, freqs, query_shift, state, *, ndim: int,
             state_name: str) -> tuple[torch.dtype, torch.Tensor | None]:
    """Validate the arguments; return the compute dtype and freqs reshaped to float64 [H, D]."""
    require_tensor("v", v, ndim)
    require_shape("key_phase", require_tensor("key_phase", key_phase, ndim), v.shape)
    require_shape("query_phase", require_tensor("query_phase", query_phase, ndim), v.shape)
    if ndim == 4 and v.shape[1] == 0:
        raise ValueError("v must have at least one time step (T >= 1)")
    batch, heads, dim = v.shape[0], v.shape[-2], v.shape[-1]
    if freqs is not None:
        require_tensor("freqs", freqs)
        if tuple(freqs.shape) not in ((heads, dim), (heads * dim,)):
            raise ValueError(f"freqs must have shape {(heads, dim)} or {(heads * dim,)}, "
                             f"got {tuple(freqs.shape)}")
        freqs = freqs.to(device=v.device, dtype=torch.float64).reshape(heads, dim)
    if query_shift is not None:
        require_shape("query_shift", require_tensor("query_shift", query_shift, 1), (heads,))
        if freqs is None:
            raise ValueError("query_shift needs freqs (a position shift has no effect without "
                             "positional frequencies)")
    wide = any(x.dtype == torch.float64 for x in (v, key_phase, query_phase))
    if state is not None:
        require_state(state_name, state, (batch, heads, dim), torch.complex64)
        wide = wide or state.dtype == torch.complex128
    return (torch.float64 if wide else torch.float32), freqs


def _shift_phase(query_shift: torch.Tensor, freqs: torch.Tensor, dtype: torch.dtype):
    """δ_h ω_{h,d} wrapped, [H, D]; float64 product, differentiable w.r.t. δ."""
    return _wrap(query_shift.to(torch.float64)[:, None] * freqs).to(dtype)


def phasor_memory_ref(v: torch.Tensor, key_phase: torch.Tensor, query_phase: torch.Tensor,
                      freqs: torch.Tensor | None = None, *, offset: int = 0,
                      query_shift: torch.Tensor | None = None,
                      initial_state: torch.Tensor | None = None,
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: the recurrence as a loop over T in complex arithmetic, with the position
    angles p·ω taken straight in float64 (no wrapping, independent of `position_phases`).
    v, key_phase, query_phase [B, T, H, D] → (r [B, T, H, D], M_T [B, H, D]) complex."""
    require_nonnegative_int("offset", offset)
    dtype, freqs = _prepare(v, key_phase, query_phase, freqs, query_shift, initial_state,
                            ndim=4, state_name="initial_state")
    cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    batch, steps, heads, dim = v.shape
    m = torch.zeros(batch, heads, dim, dtype=cdtype, device=v.device)
    if initial_state is not None:
        m = m + initial_state.to(cdtype)
    outs = []
    for t in range(steps):
        p = offset + t
        phi, psi = key_phase[:, t].to(dtype), query_phase[:, t].to(dtype)
        kappa, q = torch.polar(torch.ones_like(phi), phi), torch.polar(torch.ones_like(psi), psi)
        if freqs is not None:
            one = torch.ones_like(freqs)
            kappa = kappa * torch.polar(one, p * freqs).to(cdtype)
            qp = p if query_shift is None else p - query_shift.to(torch.float64)[:, None]
            q = q * torch.polar(one, qp * freqs).to(cdtype)
        m = m + v[:, t].to(dtype) * kappa
        outs.append(m * q.conj() / math.sqrt(p + 1))
    return torch.stack(outs, dim=1), m


def phasor_memory(v: torch.Tensor, key_phase: torch.Tensor, query_phase: torch.Tensor,
                  freqs: torch.Tensor | None = None, *, offset: int = 0,
                  query_shift: torch.Tensor | None = None,
                  initial_state: torch.Tensor | None = None,
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Fast parallel form (no loop over T): real cos/sin binding + one blocked cumsum.
    v, key_phase, query_phase [B, T, H, D] → (r [B, T, H, D], M_T [B, H, D]) complex."""
    require_nonnegative_int("offset", offset)
    dtype, freqs = _prepare(v, key_phase, query_phase, freqs, query_shift, initial_state,
                            ndim=4, state_name="initial_state")
    steps = v.shape[1]
    v, theta, psi = (x.to(dtype) for x in (v, key_phase, query_phase))
    positions = torch.arange(offset, offset + steps, dtype=torch.float64, device=v.device)
    if freqs is not None:
        # wrapped to [-π, π) in float64 first; the sums with content phases stay small enough
        # (|θ|, |ψ| <= 3π for content phases in [-π, π]) for float32 cos/sin to need no rewrap
        pos = position_phases(positions, freqs, dtype=dtype)  # [T, H, D]
        theta = theta + pos
        psi = psi + (pos if query_shift is None else pos - _shift_phase(query_shift, freqs, dtype))
    mem = cumsum(torch.stack((v * theta.cos(), v * theta.sin())), dim=2)  # [2, B, T, H, D]
    if initial_state is not None:
        m0 = initial_state.to(torch.complex128 if dtype == torch.float64 else torch.complex64)
        mem = mem + torch.stack((m0.real, m0.imag)).unsqueeze(2)
    re, im = mem
    scale = (positions + 1).rsqrt().to(dtype)[:, None, None]  # [T, 1, 1]
    cos, sin = psi.cos(), psi.sin()
    out = torch.complex((re * cos + im * sin) * scale, (im * cos - re * sin) * scale)
    return out, torch.complex(re[:, -1], im[:, -1])


def phasor_memory_step(v: torch.Tensor, key_phase: torch.Tensor, query_phase: torch.Tensor,
                       state: torch.Tensor | None, position: int,
                       freqs: torch.Tensor | None = None,
                       query_shift: torch.Tensor | None = None,
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoding step at absolute `position`: v, key_phase, query_phase [B, H, D] and the
    state M_{t-1} [B, H, D] (None = empty) → (r_t [B, H, D], M_t [B, H, D]) complex."""
    require_nonnegative_int("position", position)
    _prepare(v, key_phase, query_phase, freqs, query_shift, state, ndim=3, state_name="state")
    out, state = phasor_memory(v[:, None], key_phase[:, None], query_phase[:, None], freqs,
                               offset=position, query_shift=query_shift, initial_state=state)
    return out[:, 0], state
