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

M is stored [Dk, Dv], the transpose of the seed's `v kᵀ` with its read `M q`: the same numbers.
The seed's text reads after the write, its code before (`read_before_write=True`).
The forget gate enters the op as log f = logsigmoid(·), so any forget strength is exact
(`hololm.ops.matrix_memory`); T > 1 uses the chunkwise-parallel form, T = 1 its one-token step.
State: {"memory": M [B, H, Dk, Dv] float32}; `position` is unused (nothing here depends on
absolute position). The per-head math runs in float32 (float64 for a float64 x) whatever x's
dtype; r is cast back before `o_proj`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hololm.layers.base import Mixer, Padding, State, check_mixer_input, check_state
from hololm.ops.matrix_memory import gated_matrix_memory, gated_matrix_memory_step


class MatrixMemory(Mixer):
    def __init__(self, d_model: int, matrix_dim: int, n_heads: int, *, forget_bias: float = 2.0,
                 write_bias: float = -2.0, read_before_write: bool = False, chunk_size: int = 64,
                 backend: str = "auto"):
        super().__init__()
        self.backend = backend  # the matrix memory's (hololm/ops/backends.py)
        for name, value in (("d_model", d_model), ("matrix_dim", matrix_dim),
                            ("n_heads", n_heads), ("chunk_size", chunk_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.d_model, self.matrix_dim, self.n_heads = d_model, matrix_dim, n_heads
        self.forget_bias, self.write_bias = forget_bias, write_bias
        self.read_before_write, self.chunk_size = read_before_write, chunk_size
        inner = n_heads * matrix_dim
        self.qkv_proj = nn.Linear(d_model, 3 * inner, bias=False)  # W_q, W_k, W_v
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
        check_state(state, {"memory"}, x.shape[0])
        B, T, _ = x.shape
        H, D = self.n_heads, self.matrix_dim
        dtype = torch.promote_types(x.dtype, torch.float32)  # float32, or float64
        q, k, v = self.qkv_proj(x).to(dtype).view(B, T, 3, H, D).unbind(2)  # [B, T, H, D]
        q, k, v = F.normalize(q, dim=-1), F.normalize(k, dim=-1), torch.tanh(v)
        forget, write = self.gate_proj(x).to(dtype).view(B, T, 2, H).unbind(2)  # [B, T, H]
        log_f, w = F.logsigmoid(forget), torch.sigmoid(write)
        if pad is not None:  # a padding token neither writes nor forgets: M passes unchanged
            log_f, w = pad.zero_pads(log_f), pad.zero_pads(w)
        memory = (state or {}).get("memory")
        if T == 1:
            r, memory = gated_matrix_memory_step(q[:, 0], k[:, 0], v[:, 0], log_f[:, 0], w[:, 0],
                                                 memory, self.read_before_write)
            r = r.unsqueeze(1)  # [B, 1, H, D]
        else:
            r, memory = gated_matrix_memory(q, k, v, log_f, w, memory, self.read_before_write,
                                            self.chunk_size, backend=self.backend)  # [B, T, H, D]
        return self.o_proj(r.reshape(B, T, H * D).to(x.dtype)), {"memory": memory}

    def state_bytes(self, batch_size: int, context_len: int) -> int:
        """M in float32 (float64 for a float64 layer); constant in context."""
        size = max(self.o_proj.weight.element_size(), 4)
        return batch_size * self.n_heads * self.matrix_dim * self.matrix_dim * size
