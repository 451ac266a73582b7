"""The gated diagonal scan's reference: the recurrence as a loop over T."""

from __future__ import annotations

import torch

from hololm.ops.diagonal_scan.common import _prepare, _validate


def gated_diagonal_scan_ref(x: torch.Tensor, log_decay: torch.Tensor,
                            initial_state: torch.Tensor | None = None, *,
                            reset: torch.Tensor | None = None,
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference loop. x, log_decay: [B, T, H, D]; initial_state: [B, H, D] or None (zeros);
    reset: [B, T] bool or None, True where the state entering step t is dropped (h_t = x_t).
    Returns all states h [B, T, H, D] and the final state [B, H, D]."""
    _validate(x, log_decay, initial_state, "initial_state", 4, reset)
    x, log_decay, h, _ = _prepare(x, log_decay, initial_state)
    resets = [None] * x.shape[1] if reset is None else reset[:, :, None, None].unbind(1)
    states = []
    for x_t, log_decay_t, reset_t in zip(x.unbind(1), log_decay.unbind(1), resets, strict=True):
        decayed = log_decay_t.exp() * h  # [B, H, D]
        if reset_t is not None:  # `where`: the dropped state and its decay get no gradient
            decayed = torch.where(reset_t, 0.0, decayed)
        h = decayed + x_t
        states.append(h)
    return torch.stack(states, dim=1), h
