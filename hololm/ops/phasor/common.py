"""The phasor memory's frequencies and position phases, and the argument checks its forms
share (the math: hololm/ops/phasor/__init__.py)."""

from __future__ import annotations

import math

import torch

from hololm.ops._validate import (
    require_positive_int,
    require_reset,
    require_shape,
    require_state,
    require_tensor,
)


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


def _check_reset(reset, v: torch.Tensor, ndim: int) -> torch.Tensor | None:
    """`reset`: None, or a bool tensor of v's leading dims ([B, T] for a sequence, ndim=4; [B]
    for one step, ndim=3) on v's device."""
    return require_reset(reset, v, ndim - 2, "v")


def _shift_phase(query_shift: torch.Tensor, freqs: torch.Tensor, dtype: torch.dtype):
    """δ_h ω_{h,d} wrapped, [H, D]; float64 product, differentiable w.r.t. δ."""
    return _wrap(query_shift.to(torch.float64)[:, None] * freqs).to(dtype)
