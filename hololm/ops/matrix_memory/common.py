"""Argument checks, compute dtype, start state and document resets shared by the matrix
memory's forms (and the delta rule's)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hololm.ops._validate import require_memory_inputs, require_reset, require_tensor


def _validate(q, k, v, log_forget, write, state, state_name: str, read_before_write,
              ndim: int) -> None:
    """Shapes: q, k [*lead, Dk], v [*lead, Dv], gates [*lead], state [B, H, Dk, Dv], where
    lead is (B, T, H) for the sequence forms (ndim=4) and (B, H) for the step (ndim=3)."""
    require_tensor("log_forget", log_forget)  # required here; the write gate is optional
    require_memory_inputs(q, k, v, {"log_forget": log_forget, "write": write}, state, state_name,
                          ndim)
    if not isinstance(read_before_write, bool):
        raise TypeError(f"read_before_write must be a bool, got {type(read_before_write).__name__}")


def _validate_reset(reset, q: torch.Tensor, ndim: int) -> None:
    """`reset`: None, or a bool tensor shaped like q's (B, T) for the sequence forms (ndim=4),
    (B,) for the step (ndim=3): True where a document starts."""
    require_reset(reset, q, ndim - 2, "q")


def _drop_at(S: torch.Tensor, reset_t: torch.Tensor | None) -> torch.Tensor:
    """S [B, H, Dk, Dv] with the rows where reset_t [B] is True set to zero: the state a
    document's first token sees (nothing flows back into the dropped rows)."""
    if reset_t is None:
        return S
    return torch.where(reset_t[:, None, None, None], S.new_zeros(()), S)


def _documents(reset: torch.Tensor, N: int, C: int) -> torch.Tensor:
    """reset [B, T] bool → [B, N, C] long: per chunk, each token's document counted from 0 = the
    document of the state entering the chunk (cumsum of the chunk's resets). The tail past T
    (zero padding up to N·C) continues the last document."""
    B, T = reset.shape
    return F.pad(reset, (0, N * C - T)).view(B, N, C).long().cumsum(-1)


def _compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    wide = any(t is not None and t.dtype == torch.float64 for t in tensors)
    return torch.float64 if wide else torch.float32


def _start_state(state: torch.Tensor | None, q: torch.Tensor, v: torch.Tensor,
                 dtype: torch.dtype) -> torch.Tensor:
    if state is not None:
        return state.to(dtype)
    return q.new_zeros(q.shape[0], q.shape[-2], q.shape[-1], v.shape[-1], dtype=dtype)
