"""Causal multi-head softmax attention with RoPE, through `F.scaled_dot_product_attention`
(FlashAttention / memory-efficient kernels on GPU), with a KV cache. The baseline every
holographic mixer is compared against, and the anchor layer of the hybrids."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hololm.layers.base import Mixer, Padding, State, check_mixer_input, check_state
from hololm.layers.rotary import RotaryEmbedding


class CausalSelfAttention(Mixer):
    def __init__(self, d_model: int, n_heads: int, *, rope_base: float = 10000.0,
                 bias: bool = False):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.o_proj = nn.Linear(d_model, d_model, bias=bias)
        self.rotary = RotaryEmbedding(self.head_dim, base=rope_base)

    def forward(self, x: torch.Tensor, state: State | None = None, position: int = 0,
                pad: Padding | None = None) -> tuple[torch.Tensor, State]:
        check_mixer_input(x, self.o_proj.in_features, position, self.o_proj.weight)
        check_state(state, {"k", "v"}, x.shape[0])
        B, T, _ = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim).unbind(2)  # [B, T, H, D]
        # packed documents: positions restart per document (elsewhere RoPE is relative, so the
        # absolute position reads the same)
        at = position if pad is None or pad.starts is None else pad.positions
        q, k = self.rotary(q, at), self.rotary(k, at)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, T, D]
        if state is not None:
            k = torch.cat([state["k"].to(k.dtype), k], dim=2)
            v = torch.cat([state["v"].to(v.dtype), v], dim=2)
        past = k.shape[2] - T
        if pad is not None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=_padded_mask(pad, past, T))
        elif T == 1:
            y = F.scaled_dot_product_attention(q, k, v)
        elif past == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # a chunk after a cached prefix: query i sees keys j <= past + i
            rows = torch.arange(T, device=x.device)[:, None] + past
            mask = torch.arange(past + T, device=x.device)[None, :] <= rows  # [T, past + T]
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).reshape(B, T, -1)
        return self.o_proj(y), {"k": k, "v": v}

    def state_bytes(self, batch_size: int, context_len: int) -> int:
        itemsize = self.o_proj.weight.element_size()
        return 2 * batch_size * self.n_heads * context_len * self.head_dim * itemsize


def _padded_mask(pad: Padding, past: int, T: int) -> torch.Tensor:
    """[B, 1, T, past + T] bool: query i reads key j <= past + i when j is a real token of its
    document, and always itself, so that a padding query has a key to read and stays finite."""
    device = pad.keys.device
    rows = torch.arange(T, device=device)[:, None] + past
    cols = torch.arange(past + T, device=device)[None, :]
    keys = pad.keys[:, None, :] & (cols <= rows)  # [B, T, past + T]
    if pad.documents is not None:
        keys = keys & (pad.documents[:, None, :] == pad.documents[:, past:, None])
    mask = keys | (cols == rows)
    return mask.unsqueeze(1)
