"""LongAttention V5 (`LongConfig`): a gated element-wise recurrence per head.

For x [B, T, d], n_heads H, head dim D = d / H, per token t and head h (⊙ element-wise over D):

    xc  = SiLU(ShortConv_k(x))                          causal depthwise conv over k tokens
    q_t = L2norm(W_q xc_t),  k_t = L2norm(W_k xc_t)     per head
    v_t = LN_D(W_v x_t)                                 LayerNorm over D, affine shared by heads
    i_t = σ(W_i xc_t + b_i)                             input gate, b_i = gate_init_bias
    γ_t = σ(W_γ xc_t + b_γ)                             decay; σ(b_γ) = decay_min at head 0 …
                                                        decay_max at the last head, 1 − γ geometric
    h_t = γ_t ⊙ h_{t-1} + i_t ⊙ k_t ⊙ v_t               h ∈ [B, H, D], float32
    o_t = GroupNorm_H(LN_D(h_t) ⊙ q_t / √D) ⊙ σ(W_o xc_t + b_o)
    y_t = o_proj(o_t)

The decay enters the scan as log γ = logsigmoid(·), so any decay strength is exact
(`hololm.ops.diagonal_scan`); T > 1 uses the chunked scan, T = 1 its one-token step. The original's
chunked path clamped log-decays at ±50 and disagreed with its recurrent path; this one does not.
State: {"h": float32 [B, H, D], "conv": [B, k-1, d] (last inputs, x's dtype)}; `position` is
unused (nothing here depends on absolute position).
Packed documents (`pad.starts`): at a document's first token t the scan drops h_{t-1} (h_t =
i_t ⊙ k_t ⊙ v_t, the scan's `reset`) and the short conv reads no input before t, so each
document's outputs are those it has alone; the state handed on is its last document's.
The per-head math runs in float32 (float64 for a float64 x) whatever x's dtype; o is cast back
before `o_proj`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hololm.layers.base import Mixer, Padding, State, check_mixer_input, check_state
from hololm.layers.short_conv import ShortConv
from hololm.ops.diagonal_scan import gated_diagonal_scan, gated_diagonal_scan_step


def _affine(norm: nn.LayerNorm | nn.GroupNorm, dtype: torch.dtype
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """A norm's affine parameters in the compute dtype (float32 activations in bf16 models)."""
    return norm.weight.to(dtype), norm.bias.to(dtype)


class LongAttentionV5(Mixer):
    def __init__(self, d_model: int, n_heads: int, *, conv_size: int = 4,
                 gate_init_bias: float = 0.0, decay_min: float = 0.5, decay_max: float = 0.9999,
                 norm_eps: float = 1e-5, chunk_size: int = 16, backend: str = "auto"):
        super().__init__()
        self.backend = backend  # the diagonal scan's (hololm/ops/backends.py)
        if n_heads <= 0 or d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        if not 0.0 < decay_min <= decay_max < 1.0:
            raise ValueError(f"need 0 < decay_min <= decay_max < 1, got {decay_min}, {decay_max}")
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.gate_init_bias, self.decay_min, self.decay_max = gate_init_bias, decay_min, decay_max
        self.norm_eps, self.chunk_size = norm_eps, chunk_size
        self.conv = ShortConv(d_model, conv_size)
        self.qk_proj = nn.Linear(d_model, 2 * d_model, bias=False)  # W_q, W_k (from xc)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)  # W_v (from x)
        self.gate_proj = nn.Linear(d_model, 3 * d_model)  # W_i, W_γ, W_o with b_i, b_γ, b_o
        self.v_norm = nn.LayerNorm(self.head_dim, eps=norm_eps)
        self.h_norm = nn.LayerNorm(self.head_dim, eps=norm_eps)
        self.out_norm = nn.GroupNorm(n_heads, d_model, eps=norm_eps)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Gate biases: b_i = gate_init_bias, b_o = 0, and b_γ constant per head with
        1 − σ(b_γ) spaced geometrically from 1 − decay_min (head 0) to 1 − decay_max."""
        b_i, b_decay, b_o = self.gate_proj.bias.view(3, self.n_heads, self.head_dim)
        b_i.fill_(self.gate_init_bias)
        b_o.zero_()
        forget = torch.logspace(math.log10(1 - self.decay_min), math.log10(1 - self.decay_max),
                                self.n_heads, dtype=torch.float64)  # 1 − γ per head
        b_decay.copy_((torch.log1p(-forget) - torch.log(forget)).unsqueeze(1).expand_as(b_decay))

    def forward(self, x: torch.Tensor, state: State | None = None, position: int = 0,
                pad: Padding | None = None) -> tuple[torch.Tensor, State]:
        check_mixer_input(x, self.d_model, position, self.o_proj.weight)
        check_state(state, {"h", "conv"}, x.shape[0])
        B, T, d = x.shape
        H, D, eps = self.n_heads, self.head_dim, self.norm_eps
        dtype = torch.promote_types(x.dtype, torch.float32)  # float32, or float64
        state = state or {}
        if pad is not None:
            x = pad.zero_pads(x)
        keep, starts = (None, None) if pad is None else (pad.mask, pad.starts)  # [B, T] bool
        xc, conv_state = self.conv(x, state.get("conv"), keep, starts)
        xc = F.silu(xc)  # [B, T, d]
        q, k = self.qk_proj(xc).to(dtype).view(B, T, 2, H, D).unbind(2)
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)  # [B, T, H, D]
        v = self.v_proj(x).to(dtype).view(B, T, H, D)
        v = F.layer_norm(v, (D,), *_affine(self.v_norm, dtype), eps)  # [B, T, H, D]
        i, decay, out_gate = self.gate_proj(xc).to(dtype).view(B, T, 3, H, D).unbind(2)
        u = torch.sigmoid(i) * k * v  # [B, T, H, D]
        log_decay = F.logsigmoid(decay)  # log γ_t <= 0, [B, T, H, D]
        if pad is not None:  # a padding token neither writes nor decays: h passes unchanged
            u, log_decay = pad.zero_pads(u), pad.zero_pads(log_decay)
        if T == 1:
            h, h_last = gated_diagonal_scan_step(u[:, 0], log_decay[:, 0], state.get("h"),
                                                 reset=None if starts is None else starts[:, 0])
            h = h.unsqueeze(1)  # [B, 1, H, D]
        else:
            h, h_last = gated_diagonal_scan(u, log_decay, state.get("h"), self.chunk_size,
                                            backend=self.backend, reset=starts)
        o = F.layer_norm(h, (D,), *_affine(self.h_norm, dtype), eps) * q / math.sqrt(D)
        o = F.group_norm(o.reshape(B * T, d), H, *_affine(self.out_norm, dtype), eps)  # [B·T, d]
        o = o.view(B, T, d) * torch.sigmoid(out_gate).view(B, T, d)
        return self.o_proj(o.to(x.dtype)), {"h": h_last, "conv": conv_state}

    def state_bytes(self, batch_size: int, context_len: int) -> int:
        """h in float32 (float64 for a float64 layer) plus the last k-1 inputs in the parameters'
        dtype; constant in context."""
        size = self.o_proj.weight.element_size()
        conv = (self.conv.kernel_size - 1) * self.d_model * size
        return batch_size * (self.d_model * max(size, 4) + conv)
