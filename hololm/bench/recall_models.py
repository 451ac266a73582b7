"""The models the recall benchmark compares, built at one matched width and depth.

Families: `phasor` (Holo-Transformer memory with its key short-conv), `phasor_noconv` (the same
without it: keys from the current token only), `long` (LongAttention V5), `matrix` (HoloGPT
outer-product memory), `hsn` (HoloSpectralNet), `attention` (softmax attention with RoPE, the
baseline) and `hybrid` (phasor layers with softmax attention as the last layer).

Token tasks use the causal LM as is. Vector tasks (continuous key → value recall) reuse the same
blocks between a linear read-in and a linear read-out (`VectorModel`).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel

from hololm.models.configs import HoloConfig, HoloGPTConfig, LongConfig
from hololm.models.hsn import HoloSpectralConfig, HoloSpectralForCausalLM
from hololm.models.modeling import HoloForCausalLM, HoloGPTForCausalLM, LongForCausalLM

FAMILIES = ("phasor", "phasor_noconv", "long", "matrix", "hsn", "attention", "hybrid")
HEAD_DIM = 32  # heads = d_model // 32 for every family with heads


def build_recall_model(family: str, vocab_size: int, d_model: int, n_layers: int,
                       max_len: int) -> PreTrainedModel:
    """A fresh causal LM of `family` with width `d_model` and `n_layers` blocks; `max_len` is the
    longest sequence it will see (HoloSpectralNet's gate filter length)."""
    heads = max(1, d_model // HEAD_DIM)
    shared = {"vocab_size": vocab_size, "hidden_size": d_model, "num_hidden_layers": n_layers,
              "num_attention_heads": heads, "max_position_embeddings": max_len}
    if family in ("phasor", "phasor_noconv"):
        return HoloForCausalLM(HoloConfig(**shared, hd_dim=2 * d_model, hybrid_ratio=0,
                                          key_conv_size=4 if family == "phasor" else 1))
    if family == "hybrid":
        return HoloForCausalLM(HoloConfig(**shared, hd_dim=2 * d_model, mixer_types=[
            "phasor"] * (n_layers - 1) + ["attention"]))
    if family == "attention":
        return HoloForCausalLM(HoloConfig(**shared, hd_dim=2 * d_model,
                                          mixer_types=["attention"] * n_layers))
    if family == "long":
        return LongForCausalLM(LongConfig(**shared, hybrid_ratio=0))
    if family == "matrix":  # HoloGPT's 64 x 64 memories where the width allows
        matrix_dim = min(64, d_model)
        return HoloGPTForCausalLM(HoloGPTConfig(**{**shared, "num_attention_heads":
                                                   d_model // matrix_dim},
                                                matrix_dim=matrix_dim))
    if family == "hsn":
        return HoloSpectralForCausalLM(HoloSpectralConfig(
            vocab_size=vocab_size, hidden_size=d_model, num_hidden_layers=n_layers,
            rank=max(1, d_model // 8), max_seq_len=max_len))
    raise ValueError(f"unknown family {family!r}; choose from {FAMILIES}")


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
