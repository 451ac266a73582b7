"""Argument checks shared by the ops: every public op validates before it computes, so a bad
call fails with a ValueError/TypeError naming the argument instead of a broadcasting accident."""

from __future__ import annotations

from collections.abc import Sequence

import torch

REAL_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def require_tensor(name: str, x, ndim: int | None = None, *, real: bool = True) -> torch.Tensor:
    """`x` must be a tensor of `ndim` dims with a floating (or complex when `real=False`) dtype."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if real and x.dtype not in REAL_DTYPES:
        raise TypeError(f"{name} must be a real floating tensor "
                        f"(float16/bfloat16/float32/float64), got {x.dtype}")
    if not real and not (x.is_floating_point() or x.is_complex()):
        raise TypeError(f"{name} must be a floating or complex tensor, got {x.dtype}")
    if ndim is not None and x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dims, got shape {tuple(x.shape)}")
    return x


def require_shape(name: str, x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(x.shape)}")
    return x


def require_reset(reset, like: torch.Tensor, lead: int, like_name: str) -> torch.Tensor | None:
    """`reset` of a memory op: None, or a bool tensor of `like`'s first `lead` dims ([B, T] for
    a sequence, [B] for one step) on its device, True where a document starts."""
    if reset is None:
        return None
    if not isinstance(reset, torch.Tensor):
        raise TypeError(f"reset must be a torch.Tensor or None, got {type(reset).__name__}")
    if reset.dtype != torch.bool:
        raise TypeError(f"reset must be a bool tensor (True where a document starts), got "
                        f"{reset.dtype}")
    require_shape("reset", reset, like.shape[:lead])
    if reset.device != like.device:
        raise ValueError(f"reset must be on {like_name}'s device ({like.device}), got "
                         f"{reset.device}")
    return reset


def require_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def require_nonnegative_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return value


def require_state(name: str, state, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """A recurrent state: exact shape, and the state dtype (float32 / complex64 by design, or a
    wider type such as float64 in references). Narrower dtypes are refused, not cast silently."""
    if not isinstance(state, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(state).__name__}")
    require_shape(name, state, shape)
    if state.is_complex() != dtype.is_complex or state.dtype.itemsize < dtype.itemsize:
        raise TypeError(f"{name} must have dtype {dtype} (or wider), got {state.dtype}")
    return state


def require_memory_inputs(q, k, v, gates: dict, state, state_name: str, ndim: int) -> None:
    """A matrix memory's inputs: q, k [*lead, Dk], v [*lead, Dv], each gate [*lead] (None: not
    given), state [B, H, Dk, Dv] float32 or wider; lead is (B, T, H) for the sequence forms
    (ndim=4), (B, H) for the one-token step (ndim=3)."""
    require_tensor("q", q, ndim)
    require_tensor("k", k, ndim)
    require_shape("k", k, q.shape)
    require_tensor("v", v, ndim)
    lead = tuple(q.shape[:-1])
    if tuple(v.shape[:-1]) != lead:
        raise ValueError(f"v must have shape {lead} + (Dv,) to match q, got {tuple(v.shape)}")
    for name, gate in gates.items():
        if gate is not None:
            require_tensor(name, gate, ndim - 1)
            require_shape(name, gate, lead)
    if state is not None:
        shape = (q.shape[0], q.shape[-2], q.shape[-1], v.shape[-1])
        require_state(state_name, state, shape, torch.float32)
    if ndim == 4 and q.shape[1] == 0:
        raise ValueError("q must have at least one time step, got T=0")
