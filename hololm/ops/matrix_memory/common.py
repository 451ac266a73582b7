"""Argument checks, compute dtype and start state shared by the matrix memory's forms."""

from __future__ import annotations

import torch

from hololm.ops._validate import require_memory_inputs, require_tensor


def _validate(q, k, v, log_forget, write, state, state_name: str, read_before_write,
              ndim: int) -> None:
    """Shapes: q, k [*lead, Dk], v [*lead, Dv], gates [*lead], state [B, H, Dk, Dv], where
    lead is (B, T, H) for the sequence forms (ndim=4) and (B, H) for the step (ndim=3)."""
    require_tensor("log_forget", log_forget)  # required here; the write gate is optional
    require_memory_inputs(q, k, v, {"log_forget": log_forget, "write": write}, state, state_name,
                          ndim)
    if not isinstance(read_before_write, bool):
        raise TypeError(f"read_before_write must be a bool, got {type(read_before_write).__name__}")


def _compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    wide = any(t is not None and t.dtype == torch.float64 for t in tensors)
    return torch.float64 if wide else torch.float32


def _start_state(state: torch.Tensor | None, q: torch.Tensor, v: torch.Tensor,
                 dtype: torch.dtype) -> torch.Tensor:
    if state is not None:
        return state.to(dtype)
    return q.new_zeros(q.shape[0], q.shape[-2], q.shape[-1], v.shape[-1], dtype=dtype)
