"""The models the recall benchmark compares, built by `build_model` at one matched width and depth.

By default: `holo` (Holo-Transformer memory with its key short-conv), `holo-noconv` (the same
without it: keys from the current token only), `long` (LongAttention V5), `hologpt` (HoloGPT
outer-product memory), `hsn` (HoloSpectralNet), `attention` (softmax attention with RoPE, the
baseline) and `holo-hybrid` (holo layers with softmax attention as the last layer). Any family or
variant of the registry works; the HF baselines do not (vector tasks reuse the blocks).

Token tasks use the causal LM as is. Vector tasks (continuous key → value recall) reuse the same
blocks between a linear read-in and a linear read-out (`VectorModel`).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel

from hololm.models.presets import build_model
from hololm.models.registry import FAMILIES, VARIANTS, matched_shape

MODELS = ("holo", "holo-noconv", "long", "hologpt", "hsn", "attention", "holo-hybrid")
KNOWN = (*FAMILIES, *VARIANTS)
HEAD_DIM = 32  # heads = d_model // 32 for every family with free heads


def build_recall_model(name: str, vocab_size: int, d_model: int, n_layers: int,
                       max_len: int) -> PreTrainedModel:
    """A fresh causal LM of family or variant `name` with width `d_model` and `n_layers` blocks;
    `max_len` is the longest sequence it will see (HoloSpectralNet's gate filter length)."""
    if name not in KNOWN:
        raise ValueError(f"unknown family {name!r}; choose from {KNOWN}")
    shape = matched_shape(name, d_model, n_layers, max(1, d_model // HEAD_DIM))
    return build_model(name, "tiny", vocab_size, max_len, **shape)


class VectorModel(nn.Module):
    """A family's blocks between linear maps: inputs [B, T, in_dim] → outputs [B, T, out_dim]."""

    def __init__(self, lm: PreTrainedModel, in_dim: int, out_dim: int):
        super().__init__()
        backbone = lm.model
        d = lm.config.hidden_size
        self.read_in = nn.Linear(in_dim, d)
        self.rotary, self.layers, self.norm = backbone.rotary, backbone.layers, backbone.norm
        self.read_out = nn.Linear(d, out_dim)
        self.state_bytes = lm.state_bytes

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = self.read_in(inputs)  # [B, T, d]
        if self.rotary is not None:
            x = self.rotary(x, 0)
        for layer in self.layers:
            x, _ = layer(x, None, 0)
        return self.read_out(self.norm(x))
