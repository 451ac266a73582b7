"""The recurrent cache of a hololm model: one state dict per layer (constant-size memories for
holographic layers, a growing KV cache for attention layers) and the number of tokens seen."""

from __future__ import annotations

import inspect

import torch

from hololm.layers.base import State, state_nbytes


class HoloCache:
    """Passed as `cache` (or `past_key_values`). `seen_tokens` is the position of the next
    token; `valid` [B, seen_tokens] bool records which were real tokens once a padded batch went
    through (None while none was padding); `documents` [B, seen_tokens] long numbers the packed
    documents once position_ids went through (None before)."""

    def __init__(self, n_layers: int):
        self.states: list[State | None] = [None] * n_layers
        self.seen_tokens = 0
        self.valid: torch.Tensor | None = None
        self.documents: torch.Tensor | None = None
        self.signature: tuple | None = None  # of the model that fills it (models/inputs.py)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen_tokens

    @property
    def batch_size(self) -> int | None:
        for state in self.states:
            if state:
                return next(iter(state.values())).shape[0]
        return None if self.valid is None else self.valid.shape[0]

    def nbytes(self) -> int:
        """Bytes held by all layers' states."""
        return sum(state_nbytes(s) for s in self.states if s)

    def copy(self) -> HoloCache:
        """A cache that continues from the same point without sharing future updates (layer
        states are replaced, never written in place, so their tensors can be shared)."""
        new = HoloCache(len(self.states))
        new.states, new.seen_tokens = list(self.states), self.seen_tokens
        new.valid, new.documents, new.signature = self.valid, self.documents, self.signature
        return new

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Select batch rows (beam search)."""
        self.states = [None if s is None else
                       {k: t.index_select(0, beam_idx.to(t.device)) for k, t in s.items()}
                       for s in self.states]
        if self.valid is not None:
            self.valid = self.valid.index_select(0, beam_idx.to(self.valid.device))
        if self.documents is not None:
            self.documents = self.documents.index_select(0, beam_idx.to(self.documents.device))

    def __len__(self) -> int:
        return len(self.states)

    def __repr__(self) -> str:
        return f"HoloCache(layers={len(self.states)}, seen_tokens={self.seen_tokens})"


# what transformers names a causal LM's cache, newest first: `cache` from 5.25 on (our models
# take both), `cache_params` in older Mamba releases, `past_key_values` elsewhere
CACHE_NAMES = ("cache", "cache_params", "past_key_values")


def cache_argument(model) -> str:
    """The keyword under which `model.forward` takes its cache, on the installed transformers."""
    parameters = inspect.signature(model.forward).parameters
    return next((name for name in CACHE_NAMES if name in parameters), "past_key_values")


def cache_of(output) -> object | None:
    """The cache in a model's output (a ModelOutput), whatever it is named."""
    return next((output[name] for name in CACHE_NAMES if name in output), None)
