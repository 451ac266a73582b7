"""The gated diagonal scan's reference: the recurrence as a loop over T."""

from __future__ import annotations

import torch

from hololm.ops.diagonal_scan.common import _prepare, _validate


def gated_diagonal_scan_ref(x: torch.Tensor, log_decay: torch.Tensor,
                            initial_state: torch.Tensor | None = None,
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference loop. x, log_decay: [B, T, H, D]; initial_state: [B, H, D] or None (zeros).
    Returns all states h [B, T, H, D] and the final state [B, H, D]."""
    _validate(x, log_decay, initial_state, "initial_state", 4)
    x, log_decay, h, _ = _prepare(x, log_decay, initial_state)
    states = []
    for x_t, log_decay_t in zip(x.unbind(1), log_decay.unbind(1), strict=True):
        h = log_decay_t.exp() * h + x_t
        states.append(h)
    return torch.stack(states, dim=1), h
