"""The phasor memory's reference: the recurrence as a loop over T in complex arithmetic."""

from __future__ import annotations

import math

import torch

from hololm.ops._validate import require_nonnegative_int
from hololm.ops.phasor.common import _check_reset, _prepare


def phasor_memory_ref(v: torch.Tensor, key_phase: torch.Tensor, query_phase: torch.Tensor,
                      freqs: torch.Tensor | None = None, *, offset: int = 0,
                      query_shift: torch.Tensor | None = None,
                      initial_state: torch.Tensor | None = None,
                      reset: torch.Tensor | None = None,
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: the recurrence as a loop over T in complex arithmetic, with the position
    angles p·ω taken straight in float64 (no wrapping, independent of `position_phases`).
    v, key_phase, query_phase [B, T, H, D], reset [B, T] bool (None: no reset) → (r [B, T, H,
    D], M_T [B, H, D]) complex. A reset at t replaces M_{t-1} by zeros before v_t is written."""
    require_nonnegative_int("offset", offset)
    dtype, freqs = _prepare(v, key_phase, query_phase, freqs, query_shift, initial_state,
                            ndim=4, state_name="initial_state")
    reset = _check_reset(reset, v, 4)
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
        if reset is not None:
            m = torch.where(reset[:, t, None, None], torch.zeros_like(m), m)
        m = m + v[:, t].to(dtype) * kappa
        outs.append(m * q.conj() / math.sqrt(p + 1))
    return torch.stack(outs, dim=1), m
