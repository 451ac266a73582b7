"""The token-mixer contract shared by every layer that mixes along the sequence.

A mixer maps x [B, T, d] to y [B, T, d]. It may continue from a recurrent `state` (a dict of
tensors whose first dim is the batch; None = start of the sequence) and always returns the state
after the last token, so that a model can prefill, then decode token by token, and get exactly
the full forward pass. `position` is the number of tokens already consumed into `state`.

A padded batch passes `pad` (a `Padding`): padding tokens are skipped, so each row's outputs and
final state are those of its real tokens alone (left padding: the memory starts at the first real
token; right padding: it ends at the last one). A packed batch (several documents per row) passes
`pad.starts`: at a document's first token every mixer drops what it held (memory, short-conv
buffer, keys) and positions restart, so each document's outputs are those of the document alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Padding:
    """Which tokens of a padded batch are real, for a chunk of T tokens after `past` cached ones.

    keep [B, T] bool: real tokens of the chunk. keys [B, past + T] bool: every token an attention
    layer may read (the cached ones included). positions [B, T] long: each token's index among the
    real tokens of its document (what it would be without padding or packing; 0 on leading pads).

    Packed documents (None when the rows hold one document each): starts [B, T] bool marks each
    document's first token, where a mixer's state is dropped before the token is read;
    documents [B, past + T] long numbers the documents of the row so far (the cached tokens
    included), so an attention layer reads only keys of its query's document.

    padded False: keep is all True (packed documents without padding), so the mixers skip the
    work that padding needs."""

    keep: torch.Tensor
    keys: torch.Tensor
    positions: torch.Tensor
    starts: torch.Tensor | None = None
    documents: torch.Tensor | None = None
    padded: bool = True

    @property
    def mask(self) -> torch.Tensor | None:
        """keep where some token may be padding, else None (what the ops take for "no pads")."""
        return self.keep if self.padded else None

    def chunk_documents(self) -> torch.Tensor | None:
        """[B, T] long: the document of each token of the chunk, counted from 0 = the document
        the state entering the chunk belongs to (so token t reads that state only when its
        index is 0); None without packed documents."""
        return None if self.starts is None else self.starts.long().cumsum(1)

    def zero_pads(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, ...] with padding positions set to 0 (`where`, so a NaN there goes too)."""
        if not self.padded:
            return x
        keep = self.keep.view(*self.keep.shape, *([1] * (x.dim() - 2)))
        return torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))


def last_real(window: torch.Tensor, keep: torch.Tensor, n: int) -> torch.Tensor:
    """The last n real entries of each row of window [B, S, C] (keep [B, S] bool), in order:
    a short convolution's buffer after a right-padded chunk. Assumes each row has >= n real
    entries (a buffer's own entries count as real)."""
    if n == 0:
        return window[:, :0]
    order = torch.argsort(keep.to(torch.int8), dim=1, stable=True)[:, -n:]  # pads sort first
    return window.gather(1, order.unsqueeze(-1).expand(-1, -1, window.shape[-1]))


class Mixer(nn.Module):
    def forward(self, x: torch.Tensor, state: State | None = None, position: int = 0,
                pad: Padding | None = None) -> tuple[torch.Tensor, State]:
        raise NotImplementedError

    def state_bytes(self, batch_size: int, context_len: int) -> int:
        """Bytes of the recurrent state after `context_len` tokens (constant for holographic
        memories; growing with context for attention's KV cache)."""
        raise NotImplementedError


def set_backend(model: nn.Module, backend: str) -> nn.Module:
    """Set the ops backend (hololm/ops/backends.py) of every mixer in `model` that has one;
    returns the model. A backend a mixer's op lacks raises on its next forward."""
    for module in model.modules():
        if isinstance(module, Mixer) and hasattr(module, "backend"):
            module.backend = backend
    return model


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
