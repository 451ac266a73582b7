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
complex tensor at all). Its backward is written by hand (`_PhasorMemory`). On CPU in float32
the same formulas run as one fused C loop per direction instead (hololm/ops/kernels/phasor.c,
`_PhasorMemoryNative`); on CUDA in float32 they run as Triton kernels
(hololm/ops/triton_kernels/phasor.py). The PyTorch form remains for float64, machines without
a C compiler and GPUs without triton. The reference is a loop over T in complex arithmetic.

Phase range: in float32, phases beyond 2^23 rad have no fractional part left (one float32 ulp
is 1 rad there). The fused kernels (C and Triton) return NaN for such angles (and for inf /
NaN phases) instead of a meaningless value; the PyTorch form returns the sine of the rounded
angle. Content phases of a layer (π·tanh) plus position phases stay below 3π.

Dtypes: inputs may be float16/bfloat16/float32/float64. The computation runs in float32 with a
complex64 output and state, unless v, key_phase, query_phase or initial_state is 64-bit, in
which case it runs in float64 and returns complex128 (for references).
"""

from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

from hololm.ops import kernels, triton_kernels
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
    # drawn on the CPU (the generator's device) whatever the default device, so that a seed
    # gives the same frequencies everywhere
    freqs = (torch.rand(hd_dim, generator=gen, dtype=torch.float64, device="cpu") * 2 - 1
             ) * max_freq
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


POSITION_BLOCK = 64  # positions per block of `_position_phase_range`


def _position_phase_tables(offset: int, steps: int, freqs: torch.Tensor, dtype: torch.dtype
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """The position phases of offset .. offset + steps − 1 as two small tables: p = offset +
    a·L + b splits into a block phase wrap((offset + a·L) ω), [n, H, D], and an in-block phase
    wrap(b ω), [L, H, D], each exact in float64 and L times smaller than [steps, H, D]."""
    block = min(POSITION_BLOCK, steps)
    n = -(-steps // block)
    starts = offset + block * torch.arange(n, dtype=torch.float64, device=freqs.device)
    inner = torch.arange(block, dtype=torch.float64, device=freqs.device)
    return position_phases(starts, freqs, dtype=dtype), position_phases(inner, freqs, dtype=dtype)


def _position_phase_range(offset: int, steps: int, freqs: torch.Tensor, dtype: torch.dtype
                          ) -> torch.Tensor:
    """The position phases of offset .. offset + steps − 1, [steps, H, D], in (−2π, 2π): the
    sum of the two `_position_phase_tables`, one broadcast add over [steps, H, D] (instead of a
    float64 product, remainder and cast). The sum is not rewrapped: it adds one rounding (~5e-7
    rad in float32), and cos / sin need no wrap."""
    blocks, inner = _position_phase_tables(offset, steps, freqs, dtype)
    pos = blocks[:, None] + inner  # [n, L, H, D]
    return pos.view(-1, *freqs.shape)[:steps]


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


class _PhasorMemory(torch.autograd.Function):
    """The memory and its retrieval on real tensors, with a hand-written backward that saves 6
    tensors and makes ~20 element-wise passes (autograd through the same formulas saved twice
    as many and was ~1.5x slower).

    forward: v, θ, ψ' [B, T, H, D], scale [T, 1, 1], m0 [B, 2, H, D] (Re, Im; None = zeros) →
    parts [B, T, 2, H, D] = (Re r, Im r) and the final memory [B, 2, H, D].
    backward, with (gA, gB) = ∂L/∂(A, B) summed over t' >= t (a reverse cumsum):
        ∂L/∂v = gA cos θ + gB sin θ          ∂L/∂θ = v (gB cos θ − gA sin θ)
        ∂L/∂ψ' = g_re Im r − g_im Re r       ∂L/∂m0 = (gA, gB) at t = 0"""

    @staticmethod
    def forward(ctx, v, theta, psi, scale, m0):
        B, T, H, D = v.shape
        cos_t, sin_t = theta.cos(), theta.sin()
        bound = v.new_empty(B, T, 2, H, D)  # (v cos θ, v sin θ): 2·H·D columns for the cumsum
        torch.mul(v, cos_t, out=bound[:, :, 0])
        torch.mul(v, sin_t, out=bound[:, :, 1])
        mem = cumsum(bound, dim=1, overwrite=True)  # [B, T, 2, H, D]: (A, B)
        del bound
        if m0 is not None:
            mem += m0.unsqueeze(1)
        re, im = mem.unbind(2)
        c, s = psi.cos().mul_(scale), psi.sin().mul_(scale)  # [B, T, H, D]
        parts = torch.empty_like(mem)
        torch.mul(re, c, out=parts[:, :, 0]).addcmul_(im, s)
        torch.mul(im, c, out=parts[:, :, 1]).addcmul_(re, s, value=-1)
        ctx.save_for_backward(v, cos_t, sin_t, c, s, parts)
        ctx.has_m0 = m0 is not None
        return parts, mem[:, -1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, g_parts, g_last):
        v, cos_t, sin_t, c, s, parts = ctx.saved_tensors
        B, T, H, D = v.shape
        # ∂L/∂(A_t, B_t), then summed over t' >= t; fully written below when g_parts is given
        grad = v.new_zeros(B, T, 2, H, D) if g_parts is None else v.new_empty(B, T, 2, H, D)
        d_psi = None
        if g_parts is not None:
            g_re, g_im = g_parts.unbind(2)
            torch.mul(g_re, c, out=grad[:, :, 0]).addcmul_(g_im, s, value=-1)
            torch.mul(g_re, s, out=grad[:, :, 1]).addcmul_(g_im, c)
            d_psi = torch.mul(g_re, parts[:, :, 1]).addcmul_(g_im, parts[:, :, 0], value=-1)
        if g_last is not None:
            grad[:, -1] += g_last
        grad = cumsum(grad, dim=1, reverse=True, overwrite=True)  # summed over t' >= t
        g_a, g_b = grad.unbind(2)
        d_v = torch.mul(g_a, cos_t).addcmul_(g_b, sin_t)
        d_theta = torch.mul(g_b, cos_t).addcmul_(g_a, sin_t, value=-1).mul_(v)
        if d_psi is None:
            d_psi = torch.zeros_like(v)
        d_m0 = grad[:, 0] if ctx.has_m0 else None
        return d_v, d_theta, d_psi, None, d_m0


def _f32(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float32).contiguous()


class _PhasorMemoryNative(torch.autograd.Function):
    """`_PhasorMemory` as one fused C loop per direction (float32, CPU): the phases θ, ψ' and
    their sines and cosines are formed inside the loop from the content phases and the two
    position tables, and recomputed in the backward instead of saved, so the forward reads v,
    φ, ψ once and writes the parts once. Same math and the same position-phase rounding as the
    PyTorch form. The running sums are compensated (Kahan): over 2^20 steps of a drifting
    stream the result is within 1e-7 (relative RMS) of float64, as with the blocked cumsum,
    where a plain sequential float32 sum measured 9e-6.

    forward: v, φ, ψ [B, T, H, D], shift [H, D] (δω wrapped; None = 0), m0 [B, 2, H, D]
    (None = 0), tables (blocks [n, H, D], inner [L, H, D]; None = content-only), scale [T]
    → the retrieval, planar parts [B, T, 2, H, D] or (`interleaved`) [B, T, H, D, 2], ready
    for `torch.view_as_complex`, and the final memory [B, 2, H, D]."""

    @staticmethod
    def forward(ctx, v, phi, psi, shift, m0, tables, scale, lib, interleaved):
        B, T, H, D = v.shape
        C = H * D
        v, phi, psi, scale = _f32(v), _f32(phi), _f32(psi), _f32(scale)
        shift = v.new_zeros(H, D) if shift is None else _f32(shift)
        m0 = v.new_zeros(B, 2, H, D) if m0 is None else _f32(m0)
        if tables is None:  # one row of zeros each, read with row stride 0
            tables, strides = (v.new_zeros(1, H, D), v.new_zeros(1, H, D)), (0, 0)
        else:
            tables, strides = tuple(_f32(x) for x in tables), (C, C)
        shape = (B, T, H, D, 2) if interleaved else (B, T, 2, H, D)
        parts, last = v.new_empty(shape), v.new_empty(B, 2, H, D)
        layout = "_complex" if interleaved else ""
        p = kernels.pointer
        kernels.run_split(  # 4 state rows: the running sums and their compensations
            getattr(lib, "phasor_forward" + layout),
            (p(v), p(phi), p(psi), p(tables[0]), p(tables[1]), tables[1].shape[0], *strides,
             p(shift), p(scale), p(m0), p(parts), p(last)), 4, v, B, T, C)
        ctx.save_for_backward(v, phi, psi, shift, scale, parts, *tables)
        ctx.strides, ctx.backward = strides, getattr(lib, "phasor_backward" + layout)
        return parts, last

    @staticmethod
    @once_differentiable
    def backward(ctx, g_parts, g_last):
        v, phi, psi, shift, scale, parts, blocks, inner = ctx.saved_tensors
        B, T, H, D = v.shape
        C = H * D
        g_parts = torch.zeros_like(parts) if g_parts is None else _f32(g_parts)
        g_last = v.new_zeros(B, 2, H, D) if g_last is None else _f32(g_last)
        d_v, d_phi, d_psi = torch.empty_like(v), torch.empty_like(v), torch.empty_like(v)
        d_m0 = v.new_empty(B, 2, H, D) if ctx.needs_input_grad[4] else None
        p = kernels.pointer
        kernels.run_split(
            ctx.backward,
            (p(v), p(phi), p(psi), p(blocks), p(inner), inner.shape[0], *ctx.strides, p(shift),
             p(scale), p(parts), p(g_parts), p(g_last), p(d_v), p(d_phi), p(d_psi), p(d_m0)),
            4, v, B, T, C)
        d_shift = -d_psi.sum((0, 1)) if ctx.needs_input_grad[3] else None  # ψ' = ψ + pω − δω
        return d_v, d_phi, d_psi, d_shift, d_m0, None, None, None, None


@torch.compiler.disable  # see hololm/ops/__init__.py
def _fast_form(v, key_phase, query_phase, freqs, offset, query_shift, initial_state,
               complex_out: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The fast forms behind `phasor_memory_parts` (planar parts [B, T, 2, H, D]) and
    `phasor_memory` (complex [B, T, H, D]), with the final memory as complex [B, H, D]."""
    require_nonnegative_int("offset", offset)
    dtype, freqs = _prepare(v, key_phase, query_phase, freqs, query_shift, initial_state,
                            ndim=4, state_name="initial_state")
    steps = v.shape[1]
    positions = torch.arange(offset, offset + steps, dtype=torch.float64, device=v.device)
    scale = (positions + 1).rsqrt().to(dtype)  # [T]
    shift = None if query_shift is None else _shift_phase(query_shift, freqs, dtype)  # [H, D]
    m0 = None
    if initial_state is not None:
        m0 = initial_state.to(torch.complex128 if dtype == torch.float64 else torch.complex64)
        m0 = torch.stack((m0.real, m0.imag), dim=1)  # [B, 2, H, D]
    fused = triton_kernels.usable(v, dtype)
    lib = (kernels.library("phasor")
           if not fused and v.device.type == "cpu" and dtype == torch.float32 else None)
    with torch.autocast(v.device.type, enabled=False):
        if fused or lib is not None:
            tables = (None if freqs is None
                      else _position_phase_tables(offset, steps, freqs, dtype))
            if fused:
                from hololm.ops.triton_kernels.phasor import PhasorMemoryTriton

                out, last = PhasorMemoryTriton.apply(v, key_phase, query_phase, shift, m0,
                                                     tables, scale, complex_out)
            else:
                out, last = _PhasorMemoryNative.apply(v, key_phase, query_phase, shift, m0,
                                                      tables, scale, lib, complex_out)
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
            out, last = _PhasorMemory.apply(v, theta, psi, scale[:, None, None], m0)
            if complex_out:
                out = torch.complex(out[:, :, 0], out[:, :, 1])
    return out, torch.complex(last[:, 0], last[:, 1])


def phasor_memory_parts(v: torch.Tensor, key_phase: torch.Tensor, query_phase: torch.Tensor,
                        freqs: torch.Tensor | None = None, *, offset: int = 0,
                        query_shift: torch.Tensor | None = None,
                        initial_state: torch.Tensor | None = None,
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """`phasor_memory` with the retrieval as real parts: (parts [B, T, 2, H, D] with
    parts[:, :, 0] = Re r and parts[:, :, 1] = Im r, M_T [B, H, D] complex). A layer that feeds
    [Re r, Im r] to a norm uses `parts.flatten(2)` directly, without complex tensors."""
    return _fast_form(v, key_phase, query_phase, freqs, offset, query_shift, initial_state,
                      complex_out=False)


def phasor_memory(v: torch.Tensor, key_phase: torch.Tensor, query_phase: torch.Tensor,
                  freqs: torch.Tensor | None = None, *, offset: int = 0,
                  query_shift: torch.Tensor | None = None,
                  initial_state: torch.Tensor | None = None,
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Fast parallel form (no loop over T): in float32 a fused kernel (C on CPU, Triton on
    CUDA), writing the complex result directly; elsewhere real cos/sin binding + one blocked
    cumsum.
    v, key_phase, query_phase [B, T, H, D] → (r [B, T, H, D], M_T [B, H, D]) complex."""
    return _fast_form(v, key_phase, query_phase, freqs, offset, query_shift, initial_state,
                      complex_out=True)


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
