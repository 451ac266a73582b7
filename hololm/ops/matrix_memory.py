"""Gated outer-product matrix memory (HoloGPT): a fast-weight / GLA-style linear RNN
with one scalar forget gate and one scalar write gate per token and head.

Per batch row and head, with a state S_t of shape [Dk, Dv]:

    S_t = f_t S_{t-1} + w_t k_t v_tᵀ          f_t = exp(log_forget_t) (log_forget <= 0),
    y_t = S_tᵀ q_t                            w_t = write_t (None means 1)

`read_before_write=True` reads the memory before the update, y_t = S_{t-1}ᵀ q_t (HoloGPT's
code; its text reads after). Three forms compute the same function:

- `holo_scan`: the readable sequential reference (a loop over T; HoloGPT's name).
- `gated_matrix_memory`: the chunkwise-parallel form for training (Mamba-2 SSD / GLA). With Γ
  the chunk-local inclusive cumsum of log_forget and S_0 the state entering the chunk,

      y_t    = Σ_{s<=t} exp(Γ_t − Γ_s) w_s (q_t·k_s) v_s  +  exp(Γ_t) S_0ᵀ q_t
      S_next = exp(Γ_C) S_0  +  Σ_s exp(Γ_C − Γ_s) w_s k_s v_sᵀ

  read_before_write reads S_{t-1}: Γ_t on the query side becomes Γ_{t-1} = Γ_t − log f_t and
  s <= t becomes s < t. Only sums of log gates (<= 0) are exponentiated, never Γ alone with
  the wrong sign, so any decay strength is safe; they are summed in float64 over exactly the
  gates they span. The chunk-to-chunk state passing is a loop over the T / C chunks (measured
  as fast as the quadratic all-pairs form at T = 4096 and linear beyond). On CPU in float32 the
  intra-chunk decay mask is a fused C kernel (hololm/ops/kernels/matrix_memory.c). On CUDA,
  when flash-linear-attention is installed and q, k, v are half precision (autocast training),
  its chunked Triton kernels run instead (hololm/ops/triton_kernels/fla_matrix_memory.py; not
  for read_before_write; its own chunk size, and its own numerics: see there).
- `gated_matrix_memory_step`: one token, for decoding.

Dtypes: inputs may be float16 / bfloat16 / float32 / float64. Everything is computed in
float32, or in float64 when any input (initial state included) is float64; the output and the
state are returned in that compute dtype. A given state must be float32 or wider.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from hololm.ops import kernels, triton_kernels
from hololm.ops._validate import (
    require_positive_int,
    require_shape,
    require_state,
    require_tensor,
)
from hololm.ops.triton_kernels import fla_matrix_memory


def _validate(q, k, v, log_forget, write, state, state_name: str, read_before_write,
              ndim: int) -> None:
    """Shapes: q, k [*lead, Dk], v [*lead, Dv], gates [*lead], state [B, H, Dk, Dv], where
    lead is (B, T, H) for the sequence forms (ndim=4) and (B, H) for the step (ndim=3)."""
    require_tensor("q", q, ndim)
    require_tensor("k", k, ndim)
    require_shape("k", k, q.shape)
    require_tensor("v", v, ndim)
    lead = tuple(q.shape[:-1])
    if tuple(v.shape[:-1]) != lead:
        raise ValueError(f"v must have shape {lead} + (Dv,) to match q, got {tuple(v.shape)}")
    require_tensor("log_forget", log_forget, ndim - 1)
    require_shape("log_forget", log_forget, lead)
    if write is not None:
        require_tensor("write", write, ndim - 1)
        require_shape("write", write, lead)
    if state is not None:
        shape = (q.shape[0], q.shape[-2], q.shape[-1], v.shape[-1])
        require_state(state_name, state, shape, torch.float32)
    if not isinstance(read_before_write, bool):
        raise TypeError(f"read_before_write must be a bool, got {type(read_before_write).__name__}")
    if ndim == 4 and q.shape[1] == 0:
        raise ValueError("q must have at least one time step, got T=0")


def _compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    wide = any(t is not None and t.dtype == torch.float64 for t in tensors)
    return torch.float64 if wide else torch.float32


def _start_state(state: torch.Tensor | None, q: torch.Tensor, v: torch.Tensor,
                 dtype: torch.dtype) -> torch.Tensor:
    if state is not None:
        return state.to(dtype)
    return q.new_zeros(q.shape[0], q.shape[-2], q.shape[-1], v.shape[-1], dtype=dtype)


def holo_scan(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_forget: torch.Tensor,
              write: torch.Tensor | None = None, initial_state: torch.Tensor | None = None,
              read_before_write: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequential reference. q, k [B, T, H, Dk], v [B, T, H, Dv], log_forget / write [B, T, H],
    initial_state [B, H, Dk, Dv] → (y [B, T, H, Dv], final state [B, H, Dk, Dv])."""
    _validate(q, k, v, log_forget, write, initial_state, "initial_state", read_before_write, 4)
    dtype = _compute_dtype(q, k, v, log_forget, write, initial_state)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    f = log_forget.to(dtype).exp()
    w = torch.ones_like(f) if write is None else write.to(dtype)
    S = _start_state(initial_state, q, v, dtype)  # [B, H, Dk, Dv]
    ys = []
    # unbind once: indexing x[:, t] in the loop would back-propagate a full-size zero tensor
    # per step, O(T²) work in the backward pass
    for q_t, k_t, v_t, f_t, w_t in zip(*(x.unbind(1) for x in (q, k, v, f, w)), strict=True):
        if read_before_write:
            ys.append(torch.einsum("bhk,bhkv->bhv", q_t, S))
        S = f_t[..., None, None] * S + w_t[..., None, None] * k_t[..., :, None] * v_t[..., None, :]
        if not read_before_write:
            ys.append(torch.einsum("bhk,bhkv->bhv", q_t, S))
    return torch.stack(ys, dim=1), S


def _decay_mask(scores: torch.Tensor, Gq: torch.Tensor, G: torch.Tensor,
                read_before_write: bool) -> torch.Tensor:
    """scores [B, H, N, C, C] (row t reads, column s wrote) times the intra-chunk decay: with
    n = t − s (− 1 when reading S_{t-1}) gates between the write and the read, exp(Gq_t − G_s)
    for n > 0, 1 for n = 0 (no gate), 0 for n < 0 (not visible). Gq, G [B, H, N, C] float64;
    the result is float32 (float64 for float64 scores). On CPU in float32 a fused C kernel
    (hololm/ops/kernels/matrix_memory.c) makes the one pass that replaces the five below."""
    work = torch.promote_types(scores.dtype, torch.float32)
    lib = (kernels.library("matrix_memory")
           if scores.device.type == "cpu" and work == torch.float32 else None)
    if lib is not None:
        return _DecayMaskNative.apply(scores.float(), Gq, G, int(read_before_write), lib)
    C = scores.shape[-1]
    pos = torch.arange(C, device=scores.device)
    n_gates = pos[:, None] - pos[None, :] - int(read_before_write)  # [C, C]
    # n < 0: -inf before exp, so exact zeros; n = 0: a constant 1 that back-propagates nothing
    no_gate = torch.zeros(C, C, dtype=work, device=scores.device)
    no_gate = no_gate.masked_fill(n_gates < 0, float("-inf"))
    log_decay = (Gq[..., :, None] - G[..., None, :]).to(work)  # [B, H, N, C, C]
    return scores * torch.where(n_gates > 0, log_decay, no_gate).exp()


class _DecayMaskNative(torch.autograd.Function):
    """`_decay_mask` as one C loop per direction (float32 scores, CPU). Saves the scores and
    recomputes the weights in the backward instead of keeping them."""

    @staticmethod
    def forward(ctx, scores, Gq, G, shift, lib):
        C = scores.shape[-1]
        scores, Gq, G = scores.contiguous(), Gq.contiguous(), G.contiguous()
        out = torch.empty_like(scores)
        p = kernels.pointer
        kernels.run_split(lib.decay_mask_forward, (p(scores), p(Gq), p(G), p(out), C, shift), 0,
                          scores, scores.numel() // (C * C), C * C, 1)  # blocks of C·C
        ctx.save_for_backward(scores, Gq, G)
        ctx.shift, ctx.lib = shift, lib
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        scores, Gq, G = ctx.saved_tensors
        C = scores.shape[-1]
        grad_out = grad_out.to(torch.float32).contiguous()
        d_scores, d_Gq, d_G = torch.empty_like(scores), torch.empty_like(Gq), torch.empty_like(G)
        p = kernels.pointer
        kernels.run_split(
            ctx.lib.decay_mask_backward,
            (p(scores), p(Gq), p(G), p(grad_out), p(d_scores), p(d_Gq), p(d_G), C, ctx.shift),
            0, scores, scores.numel() // (C * C), C * C, 1)
        return d_scores, d_Gq, d_G, None, None


class _ChunkStates(torch.autograd.Function):
    """States passed chunk to chunk: S_{n+1} = a_n S_n + U_n from S_0, for a [B, H, N],
    U [B, H, N, Dk, Dv], S_0 [B, H, Dk, Dv] → (S_in [B, H, N, Dk, Dv]: S_0 … S_{N−1}, the states
    entering the chunks; S_N). A loop over chunks of one multiply-add each, written into slices of
    the result, both ways: autograd would record two ops per chunk and stack the states, which
    cost as much as the matmuls of the whole backward. The backward runs the recurrence in
    reverse, G_n = ∂L/∂S_in[n] + a_n G_{n+1} from G_N = ∂L/∂S_N, with ∂L/∂U_n = G_{n+1},
    ∂L/∂a_n = ⟨G_{n+1}, S_n⟩ and ∂L/∂S_0 = G_0."""

    @staticmethod
    def forward(ctx, a, U, S0):
        N = U.shape[2]
        U = U.to(S0.dtype)  # states add up in the compute dtype, even when autocast made U bf16
        scale = a[..., None, None]  # [B, H, N, 1, 1]
        S_in = torch.empty_like(U)
        S_in[:, :, 0] = S0
        for n in range(N - 1):
            torch.addcmul(U[:, :, n], scale[:, :, n], S_in[:, :, n], out=S_in[:, :, n + 1])
        S_last = torch.addcmul(U[:, :, -1], scale[:, :, -1], S_in[:, :, -1])
        ctx.save_for_backward(a, S_in)
        return S_in, S_last

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_in, grad_last):
        a, S_in = ctx.saved_tensors
        N = S_in.shape[2]
        scale = a[..., None, None]
        d_U = torch.empty_like(S_in)  # d_U[n] = G_{n+1}
        d_U[:, :, -1] = grad_last
        for n in range(N - 1, 0, -1):
            torch.addcmul(grad_in[:, :, n], scale[:, :, n], d_U[:, :, n], out=d_U[:, :, n - 1])
        d_S0 = torch.addcmul(grad_in[:, :, 0], scale[:, :, 0], d_U[:, :, 0])
        d_a = torch.einsum("bhnkv,bhnkv->bhn", d_U, S_in)  # no [.., Dk, Dv] product kept
        return d_a, d_U, d_S0


@torch.compiler.disable  # see hololm/ops/__init__.py
def gated_matrix_memory(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        log_forget: torch.Tensor, write: torch.Tensor | None = None,
                        initial_state: torch.Tensor | None = None,
                        read_before_write: bool = False,
                        chunk_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunkwise-parallel form, same arguments and results as `holo_scan`. T need not be a
    multiple of `chunk_size`: the tail is zero padded (k = 0 writes nothing, log_forget = 0
    keeps the state), so padding changes neither y nor the final state."""
    _validate(q, k, v, log_forget, write, initial_state, "initial_state", read_before_write, 4)
    require_positive_int("chunk_size", chunk_size)
    dtype = _compute_dtype(q, k, v, log_forget, write, initial_state)
    if (triton_kernels.ENABLED and dtype == torch.float32
            and fla_matrix_memory.applies(q, k, v, read_before_write)):
        state = None if initial_state is None else initial_state.float()
        return fla_matrix_memory.gated_matrix_memory_fla(q, k, v, log_forget, write, state)
    B, T, H, _ = q.shape
    C = min(chunk_size, T)
    N = -(-T // C)
    pad = N * C - T

    def chunked(x: torch.Tensor) -> torch.Tensor:
        """[B, T, H, *D] → [B, H, N, C, *D]: one copy into the matmul layout, zero tail padding."""
        x = x.movedim(2, 1)
        x = F.pad(x, (0, 0) * (x.dim() - 3) + (0, pad)) if pad else x.contiguous()
        return x.view(B, H, N, C, *x.shape[3:])

    Q, K, V = chunked(q.to(dtype)), chunked(k.to(dtype)), chunked(v.to(dtype))
    if write is not None:
        V = V * chunked(write.to(dtype))[..., None]  # fold the write gate into the values
    # Log decays in float64: Γ of strong gates reaches thousands within a chunk, where float32
    # would lose the digits of the small differences Γ_t − Γ_s that matter.
    g = chunked(log_forget.to(torch.float64))  # [B, H, N, C]
    G = g.cumsum(-1)  # Σ_{r<=t} g_r
    # Sums are taken over exactly the gates they span (not as differences such as Γ_C − Γ_s),
    # so a weight of 1 with no gate in between is a constant and back-propagates nothing: an
    # exact 0 instead of +x − x, which would swamp the true tiny gradients of strong decays.
    Gq = F.pad(g[..., :-1], (1, 0)).cumsum(-1) if read_before_write else G  # read S_{t-1}: r < t
    G_rest = F.pad(g[..., 1:], (0, 1)).flip(-1).cumsum(-1).flip(-1)  # Σ_{s<r<=C} g_r

    y = _decay_mask(Q @ K.transpose(-1, -2), Gq, G, read_before_write) @ V  # [B, H, N, C, Dv]

    # each chunk's own contribution to the state it hands on, then pass states chunk to chunk
    K_end = K * G_rest.exp().to(dtype)[..., None]  # k_s exp(Γ_C − Γ_s)
    U = K_end.transpose(-1, -2) @ V  # [B, H, N, Dk, Dv]
    chunk_decay = G[..., -1].exp().to(dtype)  # [B, H, N]
    S_in, S = _ChunkStates.apply(chunk_decay, U, _start_state(initial_state, q, v, dtype))

    y = y + (Q * Gq.exp().to(dtype)[..., None]) @ S_in
    y = y.permute(0, 2, 3, 1, 4).reshape(B, N * C, H, -1)[:, :T]
    return y, S


def gated_matrix_memory_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                             log_forget: torch.Tensor, write: torch.Tensor | None = None,
                             state: torch.Tensor | None = None,
                             read_before_write: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One token: q, k [B, H, Dk], v [B, H, Dv], log_forget / write [B, H],
    state [B, H, Dk, Dv] (None = zeros) → (y [B, H, Dv], new state [B, H, Dk, Dv])."""
    _validate(q, k, v, log_forget, write, state, "state", read_before_write, 3)
    dtype = _compute_dtype(q, k, v, log_forget, write, state)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    S = _start_state(state, q, v, dtype)
    kv = k[..., :, None] * v[..., None, :]  # [B, H, Dk, Dv]
    if write is not None:
        kv = kv * write.to(dtype)[..., None, None]
    new = log_forget.to(dtype).exp()[..., None, None] * S + kv
    read = S if read_before_write else new
    return torch.einsum("bhk,bhkv->bhv", q, read), new
