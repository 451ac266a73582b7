"""Gated diagonal (element-wise) linear recurrence: the LongAttention V5 memory.

Per batch row, head and channel, with decays given in log space (log_decay <= 0):

    h_t = γ_t ⊙ h_{t-1} + x_t,        γ_t = exp(log_decay_t),        h_{-1} = initial_state

Three forms compute the same function:

- `gated_diagonal_scan_ref`: the readable loop over T.
- `gated_diagonal_scan`: the chunked form for training (no Python loop over T). The sequence is
  cut into n = ceil(T / C) chunks of C steps (the tail is padded with x = 0, γ = 1, which leaves
  the state unchanged). Then
    1. every chunk is scanned from a zero state, all chunks at once (a loop over the C chunk
       positions, vectorised over chunks): its final state s_k is its contribution to the carry;
    2. the states at the chunk ends obey the same recurrence on the chunk sequence,
       e_k = (Π_{t in k} γ_t) ⊙ e_{k-1} + s_k, solved by calling the scan recursively
       (depth log_C T);
    3. every chunk is scanned again, all at once, from its true entry state e_{k-1}.
  Step 3 performs exactly the reference's multiply-adds inside a chunk. Only log γ_t <= 0 is
  exponentiated and only factors in [0, 1] are multiplied, so any decay strength (0.9999 down to
  exp(-60) and below) is exact: nothing overflows, nothing is clamped, and a decay product that
  underflows to 0 is the true value rounded. Work and memory are O(B·T·H·D); no [.., C, C, ..]
  decay matrix is ever built. The backward is the same scan run backwards in time (a custom
  autograd Function):
      g_t = ∂L/∂h_t + γ_{t+1} g_{t+1},   ∂L/∂x_t = g_t,   ∂L/∂log γ_t = g_t γ_t h_{t-1},
      ∂L/∂initial_state = γ_0 g_0.
  It is differentiable once (no double backward).
  On CPU in float32, `gated_diagonal_scan` runs a fused C kernel instead
  (hololm/ops/kernels/diagonal_scan.c): the plain sequential recurrence, forward and backward,
  one pass over time vectorised across channels, γ_t recomputed in the backward. On CUDA in
  float32 it runs fused Triton kernels (hololm/ops/triton_kernels/diagonal_scan.py): the same
  three phases, each chunk of 64 steps scanned in parallel over its time steps.
- `gated_diagonal_scan_step`: one token, for decoding.

Dtypes: inputs may be float16 / bfloat16 / float32 / float64. Everything is computed in
float32, or in float64 when any input (initial state included) is float64; states and outputs
are returned in that compute dtype. A given state must be float32 or wider. log_decay > 0 (a
growing state) is not rejected but may overflow.
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

DEFAULT_CHUNK_SIZE = 16  # measured: 20% faster fwd+bwd than 64 at T = 8192, H·D = 256 on CPU


def _validate(x, log_decay, state, state_name: str, ndim: int) -> None:
    """x and log_decay: [B, T, H, D] (ndim=4) or [B, H, D] (ndim=3); state: [B, H, D]."""
    require_tensor("x", x, ndim)
    require_tensor("log_decay", log_decay, ndim)
    require_shape("log_decay", log_decay, x.shape)
    if state is not None:
        require_state(state_name, state, (x.shape[0], *x.shape[-2:]), torch.float32)
    if ndim == 4 and x.shape[1] == 0:
        raise ValueError("x must have at least one time step, got T=0")


def _prepare(x, log_decay, state, cast: bool = True):
    """Inputs cast to the compute dtype (left as given with `cast=False`); a None state becomes
    zeros [B, H, D]; and the compute dtype."""
    wide = any(t is not None and t.dtype == torch.float64 for t in (x, log_decay, state))
    dtype = torch.float64 if wide else torch.float32
    if state is None:
        state = x.new_zeros(x.shape[0], *x.shape[-2:], dtype=dtype)
    if cast:
        x, log_decay = x.to(dtype), log_decay.to(dtype)
    return x, log_decay, state.to(dtype), dtype


def gated_diagonal_scan_ref(x: torch.Tensor, log_decay: torch.Tensor,
                            initial_state: torch.Tensor | None = None,
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference loop. x, log_decay: [B, T, H, D]; initial_state: [B, H, D] or None (zeros).
    Returns all states h [B, T, H, D] and the final state [B, H, D]."""
    _validate(x, log_decay, initial_state, "initial_state", 4)
    x, log_decay, h, _ = _prepare(x, log_decay, initial_state)
    states = []
    for x_t, log_decay_t in zip(x.unbind(1), log_decay.unbind(1), strict=True):
        h = log_decay_t.exp() * h + x_t
        states.append(h)
    return torch.stack(states, dim=1), h


def _chunked_scan(x: torch.Tensor, gamma: torch.Tensor, h0: torch.Tensor, chunk_size: int,
                  reverse: bool = False) -> torch.Tensor:
    """All states [B, T, H, D] of h_t = gamma_t ⊙ h_{t∓1} + x_t, starting from h0 before the first
    step (the last step when `reverse`). No autograd; see the module docstring."""
    B, T, H, D = x.shape
    n = -(-T // chunk_size)
    c = T if n == 1 else chunk_size
    pad = n * c - T
    if pad:  # x = 0, γ = 1 leave the state unchanged, in either direction
        x = F.pad(x, (0, 0, 0, 0, 0, pad))
        gamma = F.pad(gamma, (0, 0, 0, 0, 0, pad), value=1.0)
    x, gamma = x.reshape(B, n, c, H, D), gamma.reshape(B, n, c, H, D)
    xs, gammas = x.unbind(2), gamma.unbind(2)  # c × [B, n, H, D]
    order = range(c - 1, -1, -1) if reverse else range(c)
    h0 = h0.unsqueeze(1)
    if n == 1:
        h = h0
    else:
        s = torch.zeros_like(xs[0])  # chunk-local final states
        for i in order:
            s = torch.addcmul(xs[i], gammas[i], s)
        ends = _chunked_scan(s, gamma.prod(2), h0.squeeze(1), chunk_size, reverse)  # [B, n, H, D]
        h = torch.cat([ends[:, 1:], h0] if reverse else [h0, ends[:, :-1]], dim=1)  # entry states
    out = torch.empty_like(x)
    for i in order:
        h = torch.addcmul(xs[i], gammas[i], h, out=out[:, :, i])
    return out.view(B, n * c, H, D)[:, :T]


class _GatedDiagonalScan(torch.autograd.Function):
    """h = scan(x, exp(log_decay), h0), whose backward is the same scan run backwards in time.
    Saves γ and h only; the backward allocates two [B, T, H, D] buffers."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, log_decay: torch.Tensor, h0: torch.Tensor,
                chunk_size: int) -> torch.Tensor:
        gamma = log_decay.exp()
        h = _chunked_scan(x, gamma, h0, chunk_size)
        ctx.save_for_backward(gamma, h, h0)
        ctx.chunk_size = chunk_size
        return h

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_h: torch.Tensor):
        gamma, h, h0 = ctx.saved_tensors
        # g_t = grad_h_t + γ_{t+1} g_{t+1}: the recurrence backwards in time, decays shifted by
        # one (the last one only decays the zero start state, but must be finite)
        buf = torch.empty_like(gamma)
        buf[:, :-1], buf[:, -1] = gamma[:, 1:], 1.0
        g = _chunked_scan(grad_h, buf, torch.zeros_like(h0), ctx.chunk_size, reverse=True)
        # ∂L/∂log γ_t = g_t γ_t h_{t-1}, written over the shifted decays, which are no longer needed
        torch.mul(g[:, 1:], h[:, :-1], out=buf[:, 1:])
        torch.mul(g[:, 0], h0, out=buf[:, 0])
        d_h0 = g[:, 0] * gamma[:, 0]
        return g, buf.mul_(gamma), d_h0, None


class _GatedDiagonalScanNative(torch.autograd.Function):
    """`_GatedDiagonalScan` as one C loop per direction (float32, CPU). Saves log γ (the input)
    and h, and recomputes γ in the backward instead of keeping it."""

    @staticmethod
    def forward(ctx, x, log_decay, h0, lib):
        B, T, H, D = x.shape
        C = H * D
        x, log_decay, h0 = x.contiguous(), log_decay.contiguous(), h0.contiguous()
        h = torch.empty_like(x)
        p = kernels.pointer
        kernels.run_split(lib.diagonal_scan_forward, (p(x), p(log_decay), p(h0), p(h)), 1, x,
                          B, T, C)  # 1 state row: h
        ctx.save_for_backward(log_decay, h, h0)
        ctx.lib = lib
        return h

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_h):
        log_decay, h, h0 = ctx.saved_tensors
        B, T, H, D = h.shape
        C = H * D
        grad_h = grad_h.to(torch.float32).contiguous()
        d_x, d_log, d_h0 = torch.empty_like(h), torch.empty_like(h), torch.empty_like(h0)
        p = kernels.pointer
        kernels.run_split(  # 2 state rows: g and the next step's decay
            ctx.lib.diagonal_scan_backward,
            (p(log_decay), p(h), p(h0), p(grad_h), p(d_x), p(d_log), p(d_h0)), 2, h, B, T, C)
        return d_x, d_log, d_h0, None


@torch.compiler.disable  # see hololm/ops/__init__.py
def gated_diagonal_scan(x: torch.Tensor, log_decay: torch.Tensor,
                        initial_state: torch.Tensor | None = None,
                        chunk_size: int = DEFAULT_CHUNK_SIZE,
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked form (same contract as `gated_diagonal_scan_ref`). `chunk_size` (>= 2, so that
    the recursion shrinks) need not divide T; it trades the length of the two within-chunk loops
    against recursion depth. In float32 fused kernels run instead, ignoring `chunk_size`: the C
    kernel on CPU (no chunks), the Triton kernels on CUDA (chunks of their own size)."""
    _validate(x, log_decay, initial_state, "initial_state", 4)
    if require_positive_int("chunk_size", chunk_size) < 2:
        raise ValueError(f"chunk_size must be at least 2, got {chunk_size}")
    x, log_decay, h0, dtype = _prepare(x, log_decay, initial_state, cast=False)
    if triton_kernels.usable(x, dtype):
        from hololm.ops.triton_kernels.diagonal_scan import gated_diagonal_scan_triton

        # the kernels read half-precision inputs themselves: no float32 copies made first
        h = gated_diagonal_scan_triton(x, log_decay, h0)
    else:
        x, log_decay = x.to(dtype), log_decay.to(dtype)
        lib = (kernels.library("diagonal_scan")
               if dtype == torch.float32 and x.device.type == "cpu" else None)
        if lib is not None:
            h = _GatedDiagonalScanNative.apply(x, log_decay, h0, lib)
        else:
            h = _GatedDiagonalScan.apply(x, log_decay, h0, chunk_size)
    # a copy, so that keeping the state for decoding does not keep all of h alive
    return h, h[:, -1].clone()


def gated_diagonal_scan_step(x: torch.Tensor, log_decay: torch.Tensor,
                             state: torch.Tensor | None = None,
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """One token. x, log_decay: [B, H, D]; state: [B, H, D] or None (zeros).
    Returns (h, new_state), which are equal: the layer reads the state itself."""
    _validate(x, log_decay, state, "state", 3)
    x, log_decay, state, _ = _prepare(x, log_decay, state)
    h = log_decay.exp() * state + x
    return h, h
