"""The models the recall benchmark compares, built by `build_model` at one matched width and depth.

The headline set (`MODELS`) pairs every hololm family's original setting with its improved one:
`holo` (Holo-Transformer, key short-conv) vs `holo-conv` (the conv also feeds queries and values)
and `holo-copies` (4 memories under permuted key phases); `hologpt` vs `hologpt-conv` and
`hologpt-delta` (the delta rule); `long` (LongAttention V5); `hsn` vs `hsn-conv`; and the two
references: `attention` (softmax attention with RoPE, in hololm's backbone) and `mamba2` (Hugging
Face's Mamba-2 with its short conv; the pure-torch path on CPU). Any family, variant or
`mamba2` works. Every hololm model has the same pre-norm block (`BLOCK`: RMSNorm, SwiGLU)
around its mixer, whatever its original project's block; vector tasks reuse the hololm blocks,
so `mamba2` skips them.

Token tasks use the causal LM as is. Vector tasks (continuous key → value recall) reuse the same
blocks between a linear read-in and a linear read-out (`VectorModel`).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel

from hololm.errors import ConfigError
from hololm.models.presets import build_model
from hololm.models.registry import FAMILIES, VARIANTS, family_of, matched_shape

MODELS = ("holo", "holo-conv", "holo-copies", "holo-decay", "hologpt", "hologpt-conv",
          "hologpt-delta", "long", "hsn", "hsn-conv", "attention", "mamba2")
OUTSIDE = ("mamba2",)  # Hugging Face models: no hololm blocks for the vector tasks to reuse
KNOWN = (*FAMILIES, *VARIANTS, *OUTSIDE)
HEAD_DIM = 32  # heads = d_model // 32 for every family with free heads
# One block around every hololm mixer, as zoology does, so that the models differ in the token
# mixer only. Holo-Transformer's own GELU / LayerNorm block slows attention itself on MQAR:
# 98.4 % / 96.6 % on the quick training slices after 3,000 steps where this block reaches
# 100 % / 100 % by 2,750 (docs/recall.md).
BLOCK = {"mlp_type": "swiglu", "norm_type": "rmsnorm"}


def build_recall_model(name: str, vocab_size: int, d_model: int, n_layers: int,
                       max_len: int, matrix_dim: int | None = None) -> PreTrainedModel:
    """A fresh causal LM of family or variant `name` with width `d_model` and `n_layers` blocks;
    `max_len` is the longest sequence it will see (HoloSpectralNet's gate filter length);
    `matrix_dim`: the side of HoloGPT's square memories (None: its family's default)."""
    if name not in KNOWN:
        raise ValueError(f"unknown family {name!r}; choose from {KNOWN}")
    shape = matched_shape(name, d_model, n_layers, max(1, d_model // HEAD_DIM))
    if matrix_dim is not None and name not in OUTSIDE and family_of(name)[0].name == "hologpt":
        if d_model % matrix_dim:
            raise ConfigError(f"matrix_dim {matrix_dim} must divide the width {d_model}")
        shape["matrix_dim"] = matrix_dim
    block = {} if name in OUTSIDE else BLOCK
    return build_model(name, "tiny", vocab_size, max_len, **shape, **block)


def state_bytes(lm: PreTrainedModel, context_len: int) -> int:
    """Bytes of one sequence's generation state after `context_len` tokens: the model's own
    `state_bytes` for hololm (a KV cache grows with the context, a memory does not); for
    Mamba-2, its SSM states plus the last conv_kernel − 1 inputs of its conv, per layer."""
    if hasattr(lm, "state_bytes"):
        return lm.state_bytes(1, context_len)
    c = lm.config
    itemsize = next(lm.parameters()).element_size()
    conv_dim = c.expand * c.hidden_size + 2 * c.n_groups * c.state_size
    per_layer = c.num_heads * c.head_dim * c.state_size + conv_dim * (c.conv_kernel - 1)
    return c.num_hidden_layers * per_layer * itemsize


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
