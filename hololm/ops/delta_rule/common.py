"""Argument checks shared by the gated delta rule's forms (compute dtype and start state as the
matrix memory's)."""

from __future__ import annotations

import torch

from hololm.ops._validate import require_shape, require_state, require_tensor


def _validate(q, k, v, beta, log_forget, state, state_name: str, ndim: int) -> None:
    """Shapes: q, k [*lead, Dk], v [*lead, Dv], beta / log_forget [*lead], state [B, H, Dk, Dv],
    where lead is (B, T, H) for the sequence forms (ndim=4) and (B, H) for the step (ndim=3)."""
    require_tensor("q", q, ndim)
    require_tensor("k", k, ndim)
    require_shape("k", k, q.shape)
    require_tensor("v", v, ndim)
    lead = tuple(q.shape[:-1])
    if tuple(v.shape[:-1]) != lead:
        raise ValueError(f"v must have shape {lead} + (Dv,) to match q, got {tuple(v.shape)}")
    require_tensor("beta", beta, ndim - 1)
    require_shape("beta", beta, lead)
    if log_forget is not None:
        require_tensor("log_forget", log_forget, ndim - 1)
        require_shape("log_forget", log_forget, lead)
    if state is not None:
        shape = (q.shape[0], q.shape[-2], q.shape[-1], v.shape[-1])
        require_state(state_name, state, shape, torch.float32)
    if ndim == 4 and q.shape[1] == 0:
        raise ValueError("q must have at least one time step, got T=0")
