"""Argument checks and the compute dtype shared by the gated diagonal scan's forms."""

from __future__ import annotations

import torch

from hololm.ops._validate import require_reset, require_shape, require_state, require_tensor


def _validate(x, log_decay, state, state_name: str, ndim: int, reset=None) -> None:
    """x and log_decay: [B, T, H, D] (ndim=4) or [B, H, D] (ndim=3); state: [B, H, D];
    reset: None or bool [B, T] (ndim=4) or [B] (ndim=3)."""
    require_tensor("x", x, ndim)
    require_tensor("log_decay", log_decay, ndim)
    require_shape("log_decay", log_decay, x.shape)
    if state is not None:
        require_state(state_name, state, (x.shape[0], *x.shape[-2:]), torch.float32)
    require_reset(reset, x, ndim - 2, "x")
    if ndim == 4 and x.shape[1] == 0:
        raise ValueError("x must have at least one time step, got T=0")


def _prepare(x, log_decay, state, cast: bool = True):
    """Inputs cast to the compute dtype (left as given with `cast=False`); a None state becomes
    zeros [B, H, D]; and the compute dtype."""
    wide = any(t is not None and t.dtype == torch.float64 for t in (x, log_decay, state))
    dtype = torch.float64 if wide else torch.float32
    if state is None:
        state = x.new_zeros(x.shape[0], *x.shape[-2:], dtype=dtype)
    if cast:
        x, log_decay = x.to(dtype), log_decay.to(dtype)
    return x, log_decay, state.to(dtype), dtype
