"""MatrixMemory: HoloGPT's gated outer-product memory.

For x [B, T, d], H heads, each with a matrix memory M ∈ [Dk, Dv] (Dk = Dv = matrix_dim), per
token t and head h:

    q_t = L2norm(W_q x_t),  k_t = L2norm(W_k x_t)     per head, [Dk]
    v_t = tanh(W_v x_t)                                [Dv]
    f_t = σ(W_f x_t + b_f)                             forget gate, scalar; b_f = forget_bias (+2)
    w_t = σ(W_w x_t + b_w)                             write gate, scalar; b_w = write_bias (−2)
    M_t = f_t M_{t-1} + w_t k_t v_tᵀ                   bind: outer product, gated update
    r_t = M_tᵀ q_t                                     read (read_before_write: M_{t-1}ᵀ q_t)
    y_t = o_proj(concat_h r_t)                         H·Dv → d

M is stored [Dk, Dv], the transpose of HoloGPT's `v kᵀ` with its read `M q`: the same numbers.
HoloGPT's text reads after the write, its code before (`read_before_write=True`).
The forget gate enters the op as log f = logsigmoid(·), so any forget strength is exact
(`hololm.ops.matrix_memory`); T > 1 uses the chunkwise-parallel form, T = 1 its one-token step.
Two ingredients that make such memories recall, both off in HoloGPT's setting:

- `conv_size` = k > 0: a causal depthwise convolution over the last k tokens (then SiLU) on the
  projected q, k and v before the memory (the short convolution of fla's and zoology's linear
  attention layers): it puts a token's neighbours into its key and value, which is what lets
  the memory bind a key to the value that follows it.
- `update="delta"`: the gated delta rule M_t = f_t (I − β_t k_t k_tᵀ) M_{t-1} + β_t k_t v_tᵀ with
  β_t = w_t (`hololm.ops.delta_rule`): a write replaces what k_t held instead of adding to it.

Packed documents (`pad.starts`): at a document's first token M is dropped (the ops' `reset`)
and the convolution reads no token before it, so each document's outputs are its own alone.

State: {"memory": M [B, H, Dk, Dv] float32, "conv": last k−1 projections [B, k−1, 3·H·Dk]
(conv_size > 0)}; `position` is unused (nothing here depends on absolute position). The
per-head math runs in float32 (float64 for a float64 x) whatever x's dtype; r is cast back
before `o_proj`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hololm.layers.base import Mixer, Padding, State, check_mixer_input, check_state
from hololm.layers.short_conv import ShortConv
from hololm.ops.delta_rule import gated_delta_rule, gated_delta_rule_step
from hololm.ops.matrix_memory import gated_matrix_memory, gated_matrix_memory_step

UPDATES = ("additive", "delta")


class MatrixMemory(Mixer):
    def __init__(self, d_model: int, matrix_dim: int, n_heads: int, *, forget_bias: float = 2.0,
                 write_bias: float = -2.0, read_before_write: bool = False, chunk_size: int = 64,
                 conv_size: int = 0, update: str = "additive", backend: str = "auto"):
        super().__init__()
        self.backend = backend  # the memory op's (hololm/ops/backends.py)
        for name, value in (("d_model", d_model), ("matrix_dim", matrix_dim),
                            ("n_heads", n_heads), ("chunk_size", chunk_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if isinstance(conv_size, bool) or not isinstance(conv_size, int) or conv_size < 0:
            raise ValueError(f"conv_size must be an int >= 0 (0: no convolution), got "
                             f"{conv_size!r}")
        if update not in UPDATES:
            raise ValueError(f"update must be one of {UPDATES}, got {update!r}")
        if update == "delta" and read_before_write:
            raise ValueError("update='delta' reads after writing: read_before_write must be "
                             "False")
        self.update = update
        self.d_model, self.matrix_dim, self.n_heads = d_model, matrix_dim, n_heads
        self.forget_bias, self.write_bias = forget_bias, write_bias
        self.read_before_write, self.chunk_size = read_before_write, chunk_size
        inner = n_heads * matrix_dim
        self.qkv_proj = nn.Linear(d_model, 3 * inner, bias=False)  # W_q, W_k, W_v
        self.conv = ShortConv(3 * inner, conv_size) if conv_size else None
        self.gate_proj = nn.Linear(d_model, 2 * n_heads)  # W_f, W_w with b_f, b_w
        self.o_proj = nn.Linear(inner, d_model, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Gate biases: b_f = forget_bias (σ(2) ≈ 0.88 keeps most of the memory), b_w =
        write_bias (σ(−2) ≈ 0.12 writes a little of each token)."""
        b_f, b_w = self.gate_proj.bias.view(2, self.n_heads)
        b_f.fill_(self.forget_bias)
        b_w.fill_(self.write_bias)

    def forward(self, x: torch.Tensor, state: State | None = None, position: int = 0,
                pad: Padding | None = None) -> tuple[torch.Tensor, State]:
        check_mixer_input(x, self.d_model, position, self.o_proj.weight)
        check_state(state, {"memory", "conv"} if self.conv else {"memory"}, x.shape[0])
        B, T, _ = x.shape
        H, D = self.n_heads, self.matrix_dim
        dtype = torch.promote_types(x.dtype, torch.float32)  # float32, or float64
        state, new_state = state or {}, {}
        reset = None if pad is None else pad.starts  # [B, T]: a document starts, M is dropped
        qkv = self.qkv_proj(x)  # [B, T, 3·H·D]
        if self.conv is not None:
            qkv = qkv if pad is None else pad.zero_pads(qkv)
            qkv, new_state["conv"] = self.conv(qkv, state.get("conv"),
                                               None if pad is None else pad.mask, reset)
            qkv = F.silu(qkv)
        q, k, v = qkv.to(dtype).view(B, T, 3, H, D).unbind(2)  # [B, T, H, D]
        q, k, v = F.normalize(q, dim=-1), F.normalize(k, dim=-1), torch.tanh(v)
        forget, write = self.gate_proj(x).to(dtype).view(B, T, 2, H).unbind(2)  # [B, T, H]
        log_f, w = F.logsigmoid(forget), torch.sigmoid(write)
        if pad is not None:  # a padding token neither writes nor forgets: M passes unchanged
            log_f, w = pad.zero_pads(log_f), pad.zero_pads(w)
        memory = state.get("memory")
        reset_0 = None if reset is None else reset[:, 0]
        if T == 1 and self.update == "delta":
            r, memory = gated_delta_rule_step(q[:, 0], k[:, 0], v[:, 0], w[:, 0], log_f[:, 0],
                                              memory, reset=reset_0)
        elif T == 1:
            r, memory = gated_matrix_memory_step(q[:, 0], k[:, 0], v[:, 0], log_f[:, 0], w[:, 0],
                                                 memory, self.read_before_write, reset=reset_0)
        elif self.update == "delta":
            r, memory = gated_delta_rule(q, k, v, w, log_f, memory, self.chunk_size, reset=reset,
                                         backend=self.backend)
        else:
            r, memory = gated_matrix_memory(q, k, v, log_f, w, memory, self.read_before_write,
                                            self.chunk_size, reset=reset, backend=self.backend)
        r = r.reshape(B, T, H * D)  # the step's [B, H, D] too
        new_state["memory"] = memory
        return self.o_proj(r.to(x.dtype)), new_state

    def state_bytes(self, batch_size: int, context_len: int) -> int:
        """M in float32 (float64 for a float64 layer) plus the convolution's last k−1
        projections in the parameters' dtype; constant in context."""
        size = self.o_proj.weight.element_size()
        memory = self.n_heads * self.matrix_dim * self.matrix_dim * max(size, 4)
        conv = 0 if self.conv is None else (self.conv.kernel_size - 1) * self.conv.channels * size
        return batch_size * (memory + conv)
