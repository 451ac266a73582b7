"""The gated delta rule's reference: the recurrence as a loop over T, and the one-token update
the step form shares."""

from __future__ import annotations

import torch

from hololm.ops._validate import require_memory_inputs, require_tensor
from hololm.ops.matrix_memory.common import (
    _compute_dtype,
    _drop_at,
    _start_state,
    _validate_reset,
)


def _validate(q, k, v, beta, log_forget, state, state_name: str, ndim: int) -> None:
    """q, k [*lead, Dk], v [*lead, Dv], beta and log_forget (optional) [*lead], state
    [B, H, Dk, Dv]: lead is (B, T, H) for the sequence forms (ndim=4), (B, H) for the step."""
    require_tensor("beta", beta)
    require_memory_inputs(q, k, v, {"beta": beta, "log_forget": log_forget}, state, state_name,
                          ndim)


def _update(S, q_t, k_t, v_t, beta_t, f_t):
    """One token on S [B, H, Dk, Dv]: decay, correct the value stored under k_t, read q_t."""
    if f_t is not None:
        S = f_t[..., None, None] * S
    error = v_t - torch.einsum("bhkv,bhk->bhv", S, k_t)  # [B, H, Dv]
    S = S + (beta_t[..., None] * k_t)[..., :, None] * error[..., None, :]
    return torch.einsum("bhk,bhkv->bhv", q_t, S), S


def gated_delta_rule_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor,
                         log_forget: torch.Tensor | None = None,
                         initial_state: torch.Tensor | None = None, *,
                         reset: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequential reference. q, k [B, T, H, Dk], v [B, T, H, Dv], beta / log_forget [B, T, H],
    initial_state [B, H, Dk, Dv], reset [B, T] bool (True: a document starts, the state entering
    the token is dropped) → (y [B, T, H, Dv], final state [B, H, Dk, Dv])."""
    _validate(q, k, v, beta, log_forget, initial_state, "initial_state", 4)
    _validate_reset(reset, q, 4)
    dtype = _compute_dtype(q, k, v, beta, log_forget, initial_state)
    q, k, v, beta = q.to(dtype), k.to(dtype), v.to(dtype), beta.to(dtype)
    f = None if log_forget is None else log_forget.to(dtype).exp()
    S = _start_state(initial_state, q, v, dtype)
    ys = []
    # unbind once: indexing x[:, t] in the loop would back-propagate a full-size zero tensor
    # per step, O(T²) work in the backward pass
    none = [None] * q.shape[1]
    steps = zip(q.unbind(1), k.unbind(1), v.unbind(1), beta.unbind(1),
                none if f is None else f.unbind(1), none if reset is None else reset.unbind(1),
                strict=True)
    for q_t, k_t, v_t, beta_t, f_t, reset_t in steps:
        y_t, S = _update(_drop_at(S, reset_t), q_t, k_t, v_t, beta_t, f_t)
        ys.append(y_t)
    return torch.stack(ys, dim=1), S
