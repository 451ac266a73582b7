"""The token-mixer contract shared by every layer that mixes along the sequence.

A mixer maps x [B, T, d] to y [B, T, d]. It may continue from a recurrent `state` (a dict of
tensors whose first dim is the batch; None = start of the sequence) and always returns the state
after the last token, so that a model can prefill, then decode token by token, and get exactly
the full forward pass. `position` is the number of tokens already consumed into `state`.
"""

from __future__ import annotations

import torch
from torch import nn

State = dict[str, torch.Tensor]


class Mixer(nn.Module):
    def forward(self, x: torch.Tensor, state: State | None = None,
                position: int = 0) -> tuple[torch.Tensor, State]:
        raise NotImplementedError

    def state_bytes(self, batch_size: int, context_len: int) -> int:
        """Bytes of the recurrent state after `context_len` tokens (constant for holographic
        memories; growing with context for attention's KV cache)."""
        raise NotImplementedError


def state_nbytes(state: State) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())
