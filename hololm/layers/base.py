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


def check_activations(x, d_model: int, weight: torch.Tensor) -> None:
    """x a floating [B, T, d_model] tensor with T >= 1 in the dtype of the layer's weights (any
    dtype under autocast, which casts per op). Mistakes raise TypeError / ValueError naming x."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating tensor of activations, got {x.dtype}")
    if x.dim() != 3 or x.shape[1] == 0 or x.shape[2] != d_model:
        raise ValueError(f"x must have shape [B, T, {d_model}] with T >= 1, got "
                         f"{tuple(x.shape)}")
    if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(f"x has dtype {x.dtype} but the layer's weights are {weight.dtype}: "
                        f"cast one to the other (e.g. layer.to({x.dtype})) or use autocast")


def check_mixer_input(x, d_model: int, position, weight: torch.Tensor) -> None:
    """What every mixer's forward checks first: `check_activations`, and `position` an
    int >= 0."""
    check_activations(x, d_model, weight)
    if isinstance(position, bool) or not isinstance(position, int) or position < 0:
        raise ValueError(f"position must be an int >= 0, got {position!r}")


def check_state(state, keys: set[str], batch_size: int) -> None:
    """A mixer's `state`: None or {} (start of the sequence), else a dict holding exactly `keys`,
    tensors with `batch_size` rows. A dict of other keys would otherwise read as an empty
    memory (a silent restart), and another batch's state as a broadcasting error deep inside."""
    if not state:
        return
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict of tensors or None, got {type(state).__name__}")
    if set(state) != keys:
        raise ValueError(f"state must hold the keys {sorted(keys)} (as returned by the previous "
                         f"call), got {sorted(state)}")
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"state[{key!r}] must be a torch.Tensor, got {type(value).__name__}")
        rows = value.shape[0] if value.dim() else 0
        if rows != batch_size:
            raise ValueError(f"state[{key!r}] holds a batch of {rows} but x has batch "
                             f"{batch_size}: start a new state")


def state_nbytes(state: State) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())
