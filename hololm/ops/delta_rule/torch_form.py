"""The gated delta rule's chunkwise-parallel form (WY / UT transform), see the package docstring:
per chunk one triangular solve and a few matmuls for all chunks at once, then a loop of one
matmul-add per chunk to pass the state on."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from hololm.ops.matrix_memory.common import _documents, _start_state


class _ChunkStates(torch.autograd.Function):
    """States passed chunk to chunk: S_{n+1} = M_n S_n + b_n from S_0, for M [N, B, H, Dk, Dk],
    b [N, B, H, Dk, Dv], S_0 [B, H, Dk, Dv] → (S_in [N, B, H, Dk, Dv]: S_0 … S_{N−1}, the states
    entering the chunks; S_N). One matmul-add per chunk written into the result, both ways:
    autograd would record and stack every step. The backward runs the recurrence in reverse,
    G_n = ∂L/∂S_in[n] + M_nᵀ G_{n+1} from G_N = ∂L/∂S_N, with ∂L/∂b_n = G_{n+1},
    ∂L/∂M_n = G_{n+1} S_nᵀ (one batched matmul after the loop) and ∂L/∂S_0 = G_0."""

    @staticmethod
    def forward(ctx, M, b, S0):
        N, B, H, Dk, Dv = b.shape
        # states add up in the state's dtype, also where autocast made M or b bf16
        M = M.to(S0.dtype).reshape(N, B * H, Dk, Dk)  # 3-D for baddbmm
        b = b.to(S0.dtype).reshape(N, B * H, Dk, Dv)
        S = torch.empty(N + 1, B * H, Dk, Dv, dtype=S0.dtype, device=S0.device)
        S[0] = S0.reshape(B * H, Dk, Dv)
        with torch.autocast(S.device.type, enabled=False):
            for n in range(N):
                torch.baddbmm(b[n], M[n], S[n], out=S[n + 1])
        ctx.save_for_backward(M, S)
        S = S.view(N + 1, B, H, Dk, Dv)
        return S[:-1], S[-1]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_in, grad_last):
        M, S = ctx.saved_tensors
        N, B, H, Dk, Dv = grad_in.shape
        grad_in = grad_in.reshape(N, B * H, Dk, Dv)
        d_b = torch.empty_like(grad_in)  # d_b[n] = G_{n+1}
        d_b[-1] = grad_last.reshape(B * H, Dk, Dv)
        for n in range(N - 1, 0, -1):
            torch.baddbmm(grad_in[n], M[n].transpose(-1, -2), d_b[n], out=d_b[n - 1])
        d_S0 = torch.baddbmm(grad_in[0], M[0].transpose(-1, -2), d_b[0])
        d_M = d_b @ S[:-1].transpose(-1, -2)
        return (d_M.view(N, B, H, Dk, Dk), d_b.view(N, B, H, Dk, Dv),
                d_S0.view(B, H, Dk, Dv))


class _StrictDecay(torch.autograd.Function):
    """Γ_ij = e^{G_i − G_j} for j < i, 0 elsewhere: G [.., C] float64 → [.., C, C] in `dtype`.
    Its backward makes one pass, ∂L/∂G_i = Σ_j t_ij − Σ_j t_ji with t = ∂L/∂Γ ⊙ Γ, where
    autograd would make five over [.., C, C] float64 tensors (a third of the op's time)."""

    @staticmethod
    def forward(ctx, G, dtype):
        C = G.shape[-1]
        strict = torch.ones(C, C, dtype=torch.bool, device=G.device).tril(-1)
        # the differences in float64; once formed, they round to float32 with a relative error
        # of 6e-8, which exp carries over as a relative error of 6e-8·|G_i − G_j|
        diff = (G[..., :, None] - G[..., None, :]).to(dtype)
        decay = diff.masked_fill_(~strict, float("-inf")).exp_()
        ctx.save_for_backward(decay)
        return decay

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (decay,) = ctx.saved_tensors
        t = (grad * decay).double()
        return t.sum(-1) - t.sum(-2), None


class _UnitLowerSolve(torch.autograd.Function):
    """X = A⁻¹ R with A = I + tril₋₁(L), for L [.., C, C], R [.., C, D] → X [.., C, D] (L's
    diagonal and what lies above it are never read). Both ways it solves in the right-hand
    form, Xᵀ Aᵀ = Rᵀ on Rᵀ as a view of the row-major R: the CPU solver runs that form 2-3x
    faster than the left-hand one, which copies every block into column-major order (autograd's
    backward would). Backward, for the loss's gradient G = ∂ℓ/∂X: ∂ℓ/∂R = A⁻ᵀ G, solved as
    (∂ℓ/∂R)ᵀ A = Gᵀ, and ∂ℓ/∂L = −tril₋₁(∂ℓ/∂R Xᵀ)."""

    @staticmethod
    def forward(ctx, L, R):
        X = torch.linalg.solve_triangular(L.mT, R.mT, upper=True, left=False,
                                          unitriangular=True).mT
        ctx.save_for_backward(L, X)
        return X

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        L, X = ctx.saved_tensors
        d_R = torch.linalg.solve_triangular(L, grad.contiguous().mT, upper=False, left=False,
                                            unitriangular=True).mT
        d_L = (d_R @ X.mT).neg_().tril_(-1)
        return d_L, d_R


def chunked_delta_rule(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor,
                       log_forget: torch.Tensor | None, initial_state: torch.Tensor | None,
                       chunk_size: int, dtype: torch.dtype, reset: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """The chunkwise-parallel (WY) form of the module docstring, on validated inputs computing
    in `dtype`; `reset` [B, T] bool: documents start there (the docstring's masks). T need not
    be a multiple of `chunk_size`: the tail is zero padded (β = 0 writes nothing, log_forget = 0
    keeps the state, no reset), so padding changes neither y nor the state."""
    B, T, H, _ = q.shape
    C = min(chunk_size, T)
    N = -(-T // C)
    pad = N * C - T

    def chunked(x: torch.Tensor, to: torch.dtype = dtype) -> torch.Tensor:
        """[B, T, H, *D] → [N, B, H, C, *D] in dtype `to`, zero tail padding: chunks first, so
        that the chunk-to-chunk pass slices contiguous blocks."""
        x = x.to(to)
        x = F.pad(x, (0, 0) * (x.dim() - 2) + (0, pad)) if pad else x
        x = x.view(B, N, C, H, *x.shape[3:]).movedim(3, 2).movedim(1, 0)
        return x.contiguous()

    Q, K, V, b = chunked(q), chunked(k), chunked(v), chunked(beta)[..., None]
    if log_forget is None:
        decay = torch.ones(C, C, dtype=dtype, device=q.device).tril()  # Γ_ij = 1 for j <= i
        e_G = e_rest = chunk_decay = None
    else:
        # in float64: G reaches thousands within a chunk for strong gates, where float32 would
        # lose the digits of the small differences G_i − G_j that matter
        g = chunked(log_forget, torch.float64)  # [N, B, H, C]
        G = g.cumsum(-1)
        # A weight that spans no gate (Γ_ii, and e^{G_C − G_j} for the last j) is the constant 1,
        # not e^{x − x}: its +x − x gradient would not cancel exactly and would swamp the true,
        # tiny gradients of strong decays.
        decay = _StrictDecay.apply(G, dtype) + torch.eye(C, dtype=dtype, device=q.device)
        e_G = G.exp().to(dtype)[..., None]  # e^{G_i}, [N, B, H, C, 1]
        rest = F.pad(g[..., 1:], (0, 1)).flip(-1).cumsum(-1).flip(-1)  # Σ_{j<r<=C} g_r
        e_rest = rest.exp().to(dtype)[..., None]  # e^{G_C − G_j}
        chunk_decay = G[..., -1].exp().to(dtype)[..., None, None]  # [N, B, H, 1, 1]

    if reset is not None:
        # Documents cut the gate products that span a start: 0/1 masks on Γ and the decays of
        # S_0 and of the state handed on, exact (a log gate of -inf at a start would make the
        # float64 differences NaN). doc: [N, B, 1, C], one document index for all heads.
        doc = _documents(reset, N, C).movedim(1, 0)[:, :, None]
        same = doc[..., :, None] == doc[..., None, :]  # [N, B, 1, C, C]
        fresh = (doc == 0).to(dtype)[..., None]  # token i sees S_0, [N, B, 1, C, 1]
        ends = (doc == doc[..., -1:]).to(dtype)[..., None]  # j's write reaches the chunk's end
        decay = decay * same
        e_G = fresh if e_G is None else e_G * fresh
        e_rest = ends if e_rest is None else e_rest * ends
        carried = fresh[..., -1:, :]  # no start in the chunk: S_0 passes, [N, B, 1, 1, 1]
        chunk_decay = carried if chunk_decay is None else chunk_decay * carried

    Kb = K * b  # β_i k_i
    # the solver reads only the strict lower triangle (unit diagonal): no mask needed
    lower = (Kb @ K.transpose(-1, -2)) * decay  # [N, B, H, C, C]
    rhs = torch.cat([V * b, Kb if e_G is None else Kb * e_G], dim=-1)
    solved = _UnitLowerSolve.apply(lower, rhs)
    U_fixed, W = solved.split([V.shape[-1], K.shape[-1]], dim=-1)  # Ũ [.., C, Dv], W [.., C, Dk]
    # S_next = M S_0 + K_endᵀ Ũ: how the chunk maps the state entering it, plus its own writes
    K_end = (K if e_rest is None else K * e_rest).transpose(-1, -2)  # [.., Dk, C]
    eye = torch.eye(K.shape[-1], dtype=dtype, device=q.device)
    M = (eye if chunk_decay is None else chunk_decay * eye) - K_end @ W  # [N, B, H, Dk, Dk]
    S_in, S = _ChunkStates.apply(M, K_end @ U_fixed, _start_state(initial_state, q, v, dtype))
    U = U_fixed - W @ S_in  # [N, B, H, C, Dv]
    reads = (Q @ K.transpose(-1, -2)) * decay  # [N, B, H, C, C], j <= i
    y = (Q if e_G is None else Q * e_G) @ S_in + reads @ U
    y = y.permute(1, 0, 3, 2, 4).reshape(B, N * C, H, -1)[:, :T]
    return y, S
