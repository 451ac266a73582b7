"""Argument checks, compute dtype and start state shared by the matrix memory's forms."""

from __future__ import annotations

import torch

from hololm.ops._validate import require_shape, require_state, require_tensor


def _validate(q, k, v, log_forget, write, state, state_name: str, read_before_write,
              ndim: int) -> None:
    """Shapes: q, k [*lead, Dk], v [*lead, Dv], gates [*lead], state [B, H, Dk, Dv], where
    lead is (B, T, H) for the sequence forms (ndim=4) and (B, H) for the step (ndim=3)."""
    require_tensor("q", q, ndim)
    require_tensor("k", k, ndim)
    require_shape("k", k, q.shape)
    require_tensor("v", v, ndim)
    lead = tuple(q.shape[:-1])
    if tuple(v.shape[:-1]) != lead:
        raise ValueError(f"v must have shape {lead} + (Dv,) to match q, got {tuple(v.shape)}")
    require_tensor("log_forget", log_forget, ndim - 1)
    require_shape("log_forget", log_forget, lead)
    if write is not None:
        require_tensor("write", write, ndim - 1)
        require_shape("write", write, lead)
    if state is not None:
        shape = (q.shape[0], q.shape[-2], q.shape[-1], v.shape[-1])
        require_state(state_name, state, shape, torch.float32)
    if not isinstance(read_before_write, bool):
        raise TypeError(f"read_before_write must be a bool, got {type(read_before_write).__name__}")
    if ndim == 4 and q.shape[1] == 0:
        raise ValueError("q must have at least one time step, got T=0")


def _compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    wide = any(t is not None and t.dtype == torch.float64 for t in tensors)
    return torch.float64 if wide else torch.float32


def _start_state(state: torch.Tensor | None, q: torch.Tensor, v: torch.Tensor,
                 dtype: torch.dtype) -> torch.Tensor:
    if state is not None:
        return state.to(dtype)
    return q.new_zeros(q.shape[0], q.shape[-2], q.shape[-1], v.shape[-1], dtype=dtype)
