"""Seed 003's front doors: `HoloGPT(vocab_size, embed_dim, matrix_dim, layers)` whose
`forward(idx, states=None)` returns `(logits, states)` so a sequence can be continued, and
`FastHoloBlock` (pre-LN matrix memory + pre-LN gated GELU FFN). Both are the shared backbone
configured by `HoloGPTConfig`; `HoloGPTForCausalLM` is the HF face of the same model."""

from __future__ import annotations

import torch
from torch import nn

from hololm.models.backbone import Block
from hololm.models.cache import HoloCache
from hololm.models.configs import HoloGPTConfig
from hololm.models.modeling import CACHE_FIELD, HoloGPTForCausalLM


class FastHoloBlock(Block):
    """x + M(LN(x)), then x + FFN(LN(x)) with M the gated matrix memory."""

    def __init__(self, embed_dim: int, matrix_dim: int = 64, n_heads: int | None = None,
                 **config_kwargs):
        heads = {} if n_heads is None else {"num_attention_heads": n_heads}
        config = HoloGPTConfig(hidden_size=embed_dim, matrix_dim=matrix_dim, num_hidden_layers=1,
                               **heads, **config_kwargs)
        super().__init__("matrix", config)


class HoloGPT(nn.Module):
    def __init__(self, vocab_size: int, embed_dim: int = 256, matrix_dim: int = 64,
                 layers: int = 4, **config_kwargs):
        super().__init__()
        config = HoloGPTConfig(vocab_size=vocab_size, hidden_size=embed_dim,
                               matrix_dim=matrix_dim, num_hidden_layers=layers, **config_kwargs)
        self.lm = HoloGPTForCausalLM(config)

    @property
    def config(self) -> HoloGPTConfig:
        return self.lm.config

    def forward(self, idx: torch.Tensor, states: HoloCache | None = None
                ) -> tuple[torch.Tensor, HoloCache]:
        """idx [B, T] → logits [B, T, V] and the states after the last token. The given
        `states` are not modified: the same states can be continued twice."""
        if states is not None and not isinstance(states, HoloCache):
            raise TypeError(f"states must be the HoloCache returned by a previous call, got "
                            f"{type(states).__name__}")
        out = self.lm(idx, cache=None if states is None else states.copy(), use_cache=True)
        return out.logits, getattr(out, CACHE_FIELD)
