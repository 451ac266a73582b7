"""The gated diagonal scan's chunked PyTorch form (any device, any dtype), with the backward
the same scan run backwards in time."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable


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
    A reset step takes γ_t = 0 in place of exp(log γ_t): it drops the state exactly, and the
    backward's products with γ_t give log γ_t and the state before it no gradient. Saves γ and h
    only; the backward allocates two [B, T, H, D] buffers."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, log_decay: torch.Tensor, h0: torch.Tensor,
                chunk_size: int, reset: torch.Tensor | None) -> torch.Tensor:
        gamma = log_decay.exp()
        if reset is not None:
            gamma = gamma.masked_fill_(reset[:, :, None, None], 0.0)  # [B, T, H, D]
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
        return g, buf.mul_(gamma), d_h0, None, None
