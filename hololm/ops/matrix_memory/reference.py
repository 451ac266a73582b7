"""The matrix memory's reference: the recurrence as a loop over T (HoloGPT's `holo_scan`)."""

from __future__ import annotations

import torch

from hololm.ops.matrix_memory.common import (
    _compute_dtype,
    _drop_at,
    _start_state,
    _validate,
    _validate_reset,
)


def holo_scan(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_forget: torch.Tensor,
              write: torch.Tensor | None = None, initial_state: torch.Tensor | None = None,
              read_before_write: bool = False, *, reset: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequential reference. q, k [B, T, H, Dk], v [B, T, H, Dv], log_forget / write [B, T, H],
    initial_state [B, H, Dk, Dv], reset [B, T] bool (True: a document starts, the state entering
    the token is dropped) → (y [B, T, H, Dv], final state [B, H, Dk, Dv])."""
    _validate(q, k, v, log_forget, write, initial_state, "initial_state", read_before_write, 4)
    _validate_reset(reset, q, 4)
    dtype = _compute_dtype(q, k, v, log_forget, write, initial_state)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    f = log_forget.to(dtype).exp()
    w = torch.ones_like(f) if write is None else write.to(dtype)
    S = _start_state(initial_state, q, v, dtype)  # [B, H, Dk, Dv]
    ys = []
    # unbind once: indexing x[:, t] in the loop would back-propagate a full-size zero tensor
    # per step, O(T²) work in the backward pass
    resets = [None] * q.shape[1] if reset is None else reset.unbind(1)
    for q_t, k_t, v_t, f_t, w_t, reset_t in zip(*(x.unbind(1) for x in (q, k, v, f, w)), resets,
                                               strict=True):
        S = _drop_at(S, reset_t)
        if read_before_write:
            ys.append(torch.einsum("bhk,bhkv->bhv", q_t, S))
        S = f_t[..., None, None] * S + w_t[..., None, None] * k_t[..., :, None] * v_t[..., None, :]
        if not read_before_write:
            ys.append(torch.einsum("bhk,bhkv->bhv", q_t, S))
    return torch.stack(ys, dim=1), S
