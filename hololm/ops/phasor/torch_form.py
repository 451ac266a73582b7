"""The phasor memory's PyTorch form: real cos / sin binding, one blocked cumsum over T and a
hand-written backward (any device, any dtype)."""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from hololm.ops.cumsum import cumsum


class _PhasorMemory(torch.autograd.Function):
    """The memory and its retrieval on real tensors, with a hand-written backward that saves 6
    tensors and makes ~20 element-wise passes (autograd through the same formulas saved twice
    as many and was ~1.5x slower).

    forward: v, θ, ψ' [B, T, H, D], scale [T, 1, 1], m0 [B, 2, H, D] (Re, Im; None = zeros) →
    parts [B, T, 2, H, D] = (Re r, Im r) and the final memory [B, 2, H, D].
    backward, with (gA, gB) = ∂L/∂(A, B) summed over t' >= t (a reverse cumsum):
        ∂L/∂v = gA cos θ + gB sin θ          ∂L/∂θ = v (gB cos θ − gA sin θ)
        ∂L/∂ψ' = g_re Im r − g_im Re r       ∂L/∂m0 = (gA, gB) at t = 0"""

    @staticmethod
    def forward(ctx, v, theta, psi, scale, m0):
        B, T, H, D = v.shape
        cos_t, sin_t = theta.cos(), theta.sin()
        bound = v.new_empty(B, T, 2, H, D)  # (v cos θ, v sin θ): 2·H·D columns for the cumsum
        torch.mul(v, cos_t, out=bound[:, :, 0])
        torch.mul(v, sin_t, out=bound[:, :, 1])
        mem = cumsum(bound, dim=1, overwrite=True)  # [B, T, 2, H, D]: (A, B)
        del bound
        if m0 is not None:
            mem += m0.unsqueeze(1)
        re, im = mem.unbind(2)
        c, s = psi.cos().mul_(scale), psi.sin().mul_(scale)  # [B, T, H, D]
        parts = torch.empty_like(mem)
        torch.mul(re, c, out=parts[:, :, 0]).addcmul_(im, s)
        torch.mul(im, c, out=parts[:, :, 1]).addcmul_(re, s, value=-1)
        ctx.save_for_backward(v, cos_t, sin_t, c, s, parts)
        ctx.has_m0 = m0 is not None
        return parts, mem[:, -1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, g_parts, g_last):
        v, cos_t, sin_t, c, s, parts = ctx.saved_tensors
        B, T, H, D = v.shape
        # ∂L/∂(A_t, B_t), then summed over t' >= t; fully written below when g_parts is given
        grad = v.new_zeros(B, T, 2, H, D) if g_parts is None else v.new_empty(B, T, 2, H, D)
        d_psi = None
        if g_parts is not None:
            g_re, g_im = g_parts.unbind(2)
            torch.mul(g_re, c, out=grad[:, :, 0]).addcmul_(g_im, s, value=-1)
            torch.mul(g_re, s, out=grad[:, :, 1]).addcmul_(g_im, c)
            d_psi = torch.mul(g_re, parts[:, :, 1]).addcmul_(g_im, parts[:, :, 0], value=-1)
        if g_last is not None:
            grad[:, -1] += g_last
        grad = cumsum(grad, dim=1, reverse=True, overwrite=True)  # summed over t' >= t
        g_a, g_b = grad.unbind(2)
        d_v = torch.mul(g_a, cos_t).addcmul_(g_b, sin_t)
        d_theta = torch.mul(g_b, cos_t).addcmul_(g_a, sin_t, value=-1).mul_(v)
        if d_psi is None:
            d_psi = torch.zeros_like(v)
        d_m0 = grad[:, 0] if ctx.has_m0 else None
        return d_v, d_theta, d_psi, None, d_m0
