"""The phasor memory with forgetting: per head h a decay λ_h = e^{log_decay_h} in (0, 1], with κ,
q and p_t as in the undecayed memory (hololm/ops/phasor/__init__.py):

    M_t = λ_h M_{t-1} + v_t κ_t                  (padding: λ = 1 and v = 0; a reset: λ = 0)
    r_t = M_t ⊙ conj(q_t) / sqrt(n_t),           n_t = Σ_{k=0}^{c_t} λ_h^{2k}

n_t sums the squared weights of the items the memory holds, so the retrieval of uncorrelated
items stays at unit scale at every position; c_t counts the real tokens before t (p_t without
padding), and λ = 1 gives n_t = p_t + 1, the undecayed memory's scale. Holo-Transformer
declares its memory free of decay; this is the option that trades that for forgetting.

Resets (packed documents), as in the undecayed memory: `reset` [B, T] bool drops the state
entering t (M_0 at t = 0), here by a decay of exactly 0 there (log λ = −inf; the scan multiplies
by e^{−inf} = 0, and no gradient reaches log λ_h from a reset). Positions and c_t stay as given,
so a caller whose documents restart passes each token's count within its document as `counts`.

`phasor_memory_decayed` runs the complex recurrence as a gated diagonal scan over its real and
imaginary parts (`hololm.ops.gated_diagonal_scan`: log-space decays, no loop over T, its own
backends), with the phases computed as the undecayed fast form does; `phasor_memory_decayed_ref`
is the loop in complex arithmetic; a one-token step is the fast form at T = 1.
"""

from __future__ import annotations

import math

import torch

from hololm.ops._validate import require_nonnegative_int, require_shape, require_tensor
from hololm.ops.diagonal_scan import gated_diagonal_scan
from hololm.ops.phasor.common import _check_reset, _prepare, _shift_phase, position_phases


def _check(v, log_decay, keep, counts, reset) -> torch.Tensor | None:
    """The checks of both forms; returns `reset` checked."""
    require_shape("log_decay", require_tensor("log_decay", log_decay, 1), (v.shape[-2],))
    for name, x in (("keep", keep), ("counts", counts)):
        if x is not None and tuple(x.shape) != tuple(v.shape[:2]):
            raise ValueError(f"{name} must have shape {tuple(v.shape[:2])}, got "
                             f"{tuple(x.shape)}")
    return _check_reset(reset, v, 4)


def _scale(log_decay: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """1 / sqrt(n_t): log_decay [H], counts [B, T] or [T] (c_t, float64) → [B or 1, T, H]
    float64. n_t = (1 − λ^{2(c+1)}) / (1 − λ²) through expm1, c + 1 where λ = 1."""
    two = 2 * log_decay.to(torch.float64)  # [H]
    c = (counts if counts.dim() == 2 else counts[None]).to(torch.float64)[..., None] + 1
    safe = torch.where(two < 0, two, -1.0)  # the λ = 1 heads take c + 1 below
    n = torch.where(two < 0, torch.expm1(safe * c) / torch.expm1(safe), c)
    return n.rsqrt()


def _decays(log_decay: torch.Tensor, v: torch.Tensor, keep: torch.Tensor | None,
            reset: torch.Tensor | None) -> torch.Tensor:
    """Per-token log decays [B, T, H] (0 at padding tokens: the memory passes unchanged; −inf
    at resets: it is dropped)."""
    decays = log_decay.to(torch.float64).expand(*v.shape[:2], -1)
    if keep is not None:
        decays = torch.where(keep[..., None], decays, 0.0)
    if reset is not None:
        decays = torch.where(reset[..., None], -math.inf, decays)
    return decays


def _counts(v: torch.Tensor, offset: int, counts: torch.Tensor | None) -> torch.Tensor:
    if counts is not None:
        return counts
    return torch.arange(offset, offset + v.shape[1], dtype=torch.float64, device=v.device)


def phasor_memory_decayed_ref(v: torch.Tensor, key_phase: torch.Tensor,
                              query_phase: torch.Tensor, freqs: torch.Tensor | None,
                              log_decay: torch.Tensor, *, offset: int = 0,
                              query_shift: torch.Tensor | None = None,
                              initial_state: torch.Tensor | None = None,
                              keep: torch.Tensor | None = None,
                              counts: torch.Tensor | None = None,
                              reset: torch.Tensor | None = None
                              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference loop. v, key_phase, query_phase [B, T, H, D], log_decay [H] (<= 0), keep [B, T]
    bool (None: all real), counts [B, T] (c_t; None: offset + t), reset [B, T] bool (None: no
    reset) → (r [B, T, H, D], M_T [B, H, D]) complex."""
    require_nonnegative_int("offset", offset)
    dtype, freqs = _prepare(v, key_phase, query_phase, freqs, query_shift, initial_state,
                            ndim=4, state_name="initial_state")
    reset = _check(v, log_decay, keep, counts, reset)
    cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    B, T, H, D = v.shape
    m = torch.zeros(B, H, D, dtype=cdtype, device=v.device)
    if initial_state is not None:
        m = m + initial_state.to(cdtype)
    decay = _decays(log_decay, v, keep, None).exp()  # [B, T, H]
    scale = _scale(log_decay, _counts(v, offset, counts)).expand(B, T, H)
    outs = []
    for t in range(T):
        p = offset + t
        kappa = torch.polar(torch.ones_like(key_phase[:, t], dtype=dtype),
                            key_phase[:, t].to(dtype))
        q = torch.polar(torch.ones_like(query_phase[:, t], dtype=dtype),
                        query_phase[:, t].to(dtype))
        if freqs is not None:
            one = torch.ones_like(freqs)
            kappa = kappa * torch.polar(one, p * freqs).to(cdtype)
            qp = p if query_shift is None else p - query_shift.to(torch.float64)[:, None]
            q = q * torch.polar(one, qp * freqs).to(cdtype)
        if reset is not None:
            m = torch.where(reset[:, t, None, None], torch.zeros_like(m), m)
        m = decay[:, t, :, None].to(dtype) * m + v[:, t].to(dtype) * kappa
        outs.append(m * q.conj() * scale[:, t, :, None].to(dtype))
    return torch.stack(outs, dim=1), m


def phasor_memory_decayed(v: torch.Tensor, key_phase: torch.Tensor, query_phase: torch.Tensor,
                          freqs: torch.Tensor | None, log_decay: torch.Tensor, *,
                          offset: int = 0, query_shift: torch.Tensor | None = None,
                          initial_state: torch.Tensor | None = None,
                          keep: torch.Tensor | None = None, counts: torch.Tensor | None = None,
                          reset: torch.Tensor | None = None, backend: str = "auto"
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """The fast form, arguments as the reference; `backend` is the diagonal scan's. Returns the
    retrieval as planar parts [B, T, 2, H, D] (Re, Im, as `phasor_memory_parts`) and M_T
    [B, H, D] complex."""
    require_nonnegative_int("offset", offset)
    dtype, freqs = _prepare(v, key_phase, query_phase, freqs, query_shift, initial_state,
                            ndim=4, state_name="initial_state")
    reset = _check(v, log_decay, keep, counts, reset)
    B, T, H, D = v.shape
    theta, psi = key_phase.to(dtype), query_phase.to(dtype)
    if freqs is not None:  # exact float64 position phases, wrapped, as the undecayed form
        positions = torch.arange(offset, offset + T, dtype=torch.float64, device=v.device)
        pos = position_phases(positions, freqs, dtype=dtype)  # [T, H, D]
        theta = theta + pos
        psi = psi + (pos if query_shift is None else pos - _shift_phase(query_shift, freqs, dtype))
    v = v.to(dtype)
    x = torch.cat([v * theta.cos(), v * theta.sin()], dim=-1)  # [B, T, H, 2D]: Re, Im of v κ
    m0 = None
    if initial_state is not None:
        m0 = initial_state.to(torch.complex128 if dtype == torch.float64 else torch.complex64)
        m0 = torch.cat([m0.real, m0.imag], dim=-1)  # [B, H, 2D]
    log_decay_t = _decays(log_decay, v, keep, reset).to(dtype)[..., None].expand(B, T, H, 2 * D)
    h, last = gated_diagonal_scan(x, log_decay_t, m0, backend=backend)
    re, im = h.split(D, dim=-1)  # M_t, [B, T, H, D] each
    scale = _scale(log_decay, _counts(v, offset, counts)).to(dtype)[..., None]  # [B, T, H, 1]
    cos, sin = psi.cos(), psi.sin()
    parts = torch.stack([(re * cos + im * sin) * scale, (im * cos - re * sin) * scale], dim=2)
    last_re, last_im = last.split(D, dim=-1)
    return parts, torch.complex(last_re, last_im)


def initial_log_decay(n_heads: int, fastest: float = 1 / 32, slowest: float = 1 / 4096
                      ) -> torch.Tensor:
    """Logits b_h with σ(b_h) = λ_h, 1 − λ spaced geometrically from `fastest` (head 0) to
    `slowest`: the heads forget over ~32 to ~4096 tokens."""
    forget = torch.logspace(math.log10(fastest), math.log10(slowest), n_heads,
                            dtype=torch.float64)
    return (torch.log1p(-forget) - torch.log(forget)).float()
