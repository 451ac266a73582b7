"""The matrix memory's chunkwise-parallel PyTorch form (any device, any dtype)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from hololm.ops.matrix_memory.common import _documents, _start_state


def _decay_mask(scores: torch.Tensor, Gq: torch.Tensor, G: torch.Tensor,
                read_before_write: bool) -> torch.Tensor:
    """scores [B, H, N, C, C] (row t reads, column s wrote) times the intra-chunk decay: with
    n = t − s (− 1 when reading S_{t-1}) gates between the write and the read, exp(Gq_t − G_s)
    for n > 0, 1 for n = 0 (no gate), 0 for n < 0 (not visible). Gq, G [B, H, N, C] float64;
    the result is float32 (float64 for float64 scores). The "cpu" backend makes the one pass
    that replaces the five below in C (cpu_form.py)."""
    work = torch.promote_types(scores.dtype, torch.float32)
    C = scores.shape[-1]
    pos = torch.arange(C, device=scores.device)
    n_gates = pos[:, None] - pos[None, :] - int(read_before_write)  # [C, C]
    # n < 0: -inf before exp, so exact zeros; n = 0: a constant 1 that back-propagates nothing
    no_gate = torch.zeros(C, C, dtype=work, device=scores.device)
    no_gate = no_gate.masked_fill(n_gates < 0, float("-inf"))
    log_decay = (Gq[..., :, None] - G[..., None, :]).to(work)  # [B, H, N, C, C]
    return scores * torch.where(n_gates > 0, log_decay, no_gate).exp()


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


def chunked_matrix_memory(q, k, v, log_forget, write, initial_state, read_before_write: bool,
                          chunk_size: int, dtype: torch.dtype, reset: torch.Tensor | None = None,
                          decay_mask=_decay_mask) -> tuple[torch.Tensor, torch.Tensor]:
    """The chunkwise-parallel form on checked arguments, computing in `dtype`; `decay_mask`:
    `_decay_mask` or its C kernel. T need not be a multiple of `chunk_size`: the tail is zero
    padded (k = 0 writes nothing, log_forget = 0 keeps the state, no reset), so padding changes
    neither y nor the final state. `reset` [B, T] bool: documents start there (the module
    docstring's masks)."""
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

    scores = Q @ K.transpose(-1, -2)  # [B, H, N, C, C]
    read_decay = Gq.exp().to(dtype)  # exp(Γ_t): how much of the chunk's incoming state t reads
    end_decay = G_rest.exp().to(dtype)  # exp(Γ_C − Γ_s): how much of s's write the chunk hands on
    chunk_decay = G[..., -1].exp().to(dtype)  # [B, H, N]
    if reset is not None:
        # Documents cut the decays: products of 0/1 masks on the terms, exact, where a log gate
        # of -inf at a start would make the cumsums' differences NaN. doc: [B, 1, N, C].
        doc = _documents(reset, N, C)[:, None]
        scores = scores * (doc[..., :, None] == doc[..., None, :])  # t reads s: same document
        read_decay = read_decay * (doc == 0)  # the incoming state is the first document's
        end_decay = end_decay * (doc == doc[..., -1:])  # the state handed on: the last one's
        chunk_decay = chunk_decay * (doc[..., -1] == 0)  # no start in the chunk
    y = decay_mask(scores, Gq, G, read_before_write) @ V  # [B, H, N, C, Dv]

    # each chunk's own contribution to the state it hands on, then pass states chunk to chunk
    U = (K * end_decay[..., None]).transpose(-1, -2) @ V  # Σ_s exp(Γ_C − Γ_s) k_s v_sᵀ
    S_in, S = _ChunkStates.apply(chunk_decay, U, _start_state(initial_state, q, v, dtype))

    y = y + (Q * read_decay[..., None]) @ S_in
    y = y.permute(0, 2, 3, 1, 4).reshape(B, N * C, H, -1)[:, :T]
    return y, S
