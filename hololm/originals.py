"""The original projects' front doors, for code written against them:

- Holo-Transformer: `HoloConfig`, `HoloTransformer(config)(input_ids)` → logits.
- LongAttention V5: `LongConfig`, `get_model_and_tokenizer(model_type, model_size, ...)`.
- HoloGPT: `HoloGPT(vocab_size, embed_dim, matrix_dim, layers)` whose `forward(idx, states)`
  returns `(logits, states)`, `FastHoloBlock`, the sequential reference `holo_scan`.
- HoloSpectralNet: `HoloSpectralNet(vocab_size, dim, depth, max_seq_len, rank, tie_weights)`
  and the presets `hsn_tiny / hsn_small / hsn_base`.

Each is a thin face over hololm's Hugging Face models (the shared backbone), so what a model
built here learns loads in `AutoModelForCausalLM` and the other way round.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from hololm.models.backbone import Block
from hololm.models.cache import HoloCache
from hololm.models.configs import HoloConfig, HoloGPTConfig, HoloSpectralConfig, LongConfig
from hololm.models.modeling import (
    CACHE_FIELD,
    HoloForCausalLM,
    HoloGPTForCausalLM,
    HoloLMForCausalLM,
    HoloSpectralForCausalLM,
)
from hololm.models.presets import get_model_and_tokenizer
from hololm.models.registry import HSN_SIZES
from hololm.ops import holo_scan

__all__ = ["FastHoloBlock", "HoloConfig", "HoloGPT", "HoloSpectralNet", "HoloTransformer",
           "LongConfig", "get_model_and_tokenizer", "holo_scan", "hsn_base", "hsn_small",
           "hsn_tiny"]


class ReturnsLogits:
    """For the front doors whose `model(input_ids)` returns the logits tensor [B, T, V]:
    `return_dict=True` (what `generate()` passes) returns the full output. The signature shown
    to transformers' introspection is the causal LM's own."""

    def forward(self, input_ids=None, *args, return_dict: bool | None = None, **kwargs):
        if not return_dict:
            if kwargs.get("labels") is not None:
                raise ValueError(f"{type(self).__name__}(input_ids) returns logits only: pass "
                                 f"return_dict=True to get the loss from labels")
            kwargs.setdefault("use_cache", False)
        out = super().forward(input_ids, *args, return_dict=True, **kwargs)
        return out if return_dict else out.logits

    forward.__signature__ = inspect.signature(HoloLMForCausalLM.forward)


class HoloTransformer(ReturnsLogits, HoloForCausalLM):
    """Holo-Transformer's front door: `HoloTransformer(config)(input_ids)` returns the logits
    tensor [B, T, V]. Use `HoloForCausalLM` for losses and caches."""


class FastHoloBlock(Block):
    """HoloGPT's block: x + M(LN(x)), then x + FFN(LN(x)) with M the gated matrix memory."""

    def __init__(self, embed_dim: int, matrix_dim: int = 64, n_heads: int | None = None,
                 **config_kwargs):
        heads = {} if n_heads is None else {"num_attention_heads": n_heads}
        config = HoloGPTConfig(hidden_size=embed_dim, matrix_dim=matrix_dim, num_hidden_layers=1,
                               **heads, **config_kwargs)
        super().__init__("hologpt", config)


class HoloGPT(nn.Module):
    """HoloGPT's model: `forward(idx, states=None)` returns `(logits, states)` so that a
    sequence can be continued; `HoloGPTForCausalLM` is the HF face of the same model."""

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


class HoloSpectralNet(ReturnsLogits, HoloSpectralForCausalLM):
    """HoloSpectralNet's front door: `HoloSpectralNet(vocab_size=32000, dim=256, depth=6,
    max_seq_len=512, rank=32, tie_weights=True)(input_ids)` returns logits [B, T, V]. Extra
    keywords go to `HoloSpectralConfig`; a config may be passed instead (as `from_pretrained`
    does). `max_seq_len` is the spectral gate's filter length, not a context limit."""

    def __init__(self, vocab_size: int | HoloSpectralConfig = 32000, dim: int = 256,
                 depth: int = 6, max_seq_len: int = 512, rank: int = 32,
                 tie_weights: bool = True, **config_kwargs):
        if isinstance(vocab_size, HoloSpectralConfig):
            config = vocab_size
        else:
            config = HoloSpectralConfig(vocab_size=vocab_size, dim=dim, depth=depth,
                                        max_seq_len=max_seq_len, rank=rank,
                                        tie_weights=tie_weights, **config_kwargs)
        super().__init__(config)


def _preset(size: str, vocab_size: int, max_seq_len: int, **kwargs) -> HoloSpectralNet:
    dim, depth = HSN_SIZES[size]["hidden_size"], HSN_SIZES[size]["num_hidden_layers"]
    return HoloSpectralNet(vocab_size, dim=dim, depth=depth, max_seq_len=max_seq_len,
                           rank=dim // 8, **kwargs)


def hsn_tiny(vocab_size: int = 32000, max_seq_len: int = 512, **kwargs) -> HoloSpectralNet:
    """dim 128, depth 4, rank 16 (4.12M parameters at vocab 32000, 4.10M of them embeddings)."""
    return _preset("tiny", vocab_size, max_seq_len, **kwargs)


def hsn_small(vocab_size: int = 32000, max_seq_len: int = 512, **kwargs) -> HoloSpectralNet:
    """dim 256, depth 6, rank 32 (8.31M parameters at vocab 32000, 8.19M of them embeddings)."""
    return _preset("small", vocab_size, max_seq_len, **kwargs)


def hsn_base(vocab_size: int = 32000, max_seq_len: int = 512, **kwargs) -> HoloSpectralNet:
    """dim 512, depth 8, rank 64 (16.95M parameters at vocab 32000, 16.38M of them
    embeddings)."""
    return _preset("medium", vocab_size, max_seq_len, **kwargs)
