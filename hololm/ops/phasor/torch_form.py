"""The phasor memory's PyTorch form: real cos / sin binding, one blocked cumsum over T and a
hand-written backward (any device, any dtype). With resets the running sums restart at each
one: the gated diagonal scan's PyTorch form with γ = 0 at a reset and 1 elsewhere, which only
multiplies by 0 or 1 and so adds exactly the terms of each segment (a cumsum minus its value at
the segment's start would not: it cancels the sums of all earlier segments)."""

from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

from hololm.ops.cumsum import cumsum
from hololm.ops.diagonal_scan import gated_diagonal_scan


def _restarting_sums(x: torch.Tensor, reset: torch.Tensor, start: torch.Tensor | None,
                     reverse: bool) -> torch.Tensor:
    """Running sums of x [B, T, 2, H, D] along T that a reset [B, T] cuts: forward,
    S_t = x_t + [¬reset_t] S_{t-1} with S_{-1} = start ([B, 2, H, D]; None = 0); `reverse`,
    S_t = x_t + [¬reset_{t+1}] S_{t+1} with S_T = 0 (the gradient of the forward sums)."""
    B, T, _, H, D = x.shape
    if reverse:  # the forward recurrence on the time-reversed sequence, gated by reset_{t+1}
        x = x.flip(1)
        reset = torch.cat([reset[:, 1:], reset.new_zeros(B, 1)], dim=1).flip(1)
    log_gate = torch.zeros(B, T, 1, 1, dtype=x.dtype, device=x.device)  # log γ: -inf at a reset
    log_gate = log_gate.masked_fill_(reset[:, :, None, None], -math.inf).expand(B, T, 2 * H, D)
    h0 = None if start is None else start.reshape(B, 2 * H, D)
    sums, _ = gated_diagonal_scan(x.reshape(B, T, 2 * H, D), log_gate, h0, backend="torch")
    sums = sums.view(B, T, 2, H, D)
    return sums.flip(1) if reverse else sums


class _PhasorMemory(torch.autograd.Function):
    """The memory and its retrieval on real tensors, with a hand-written backward that saves 6
    tensors and makes ~20 element-wise passes (autograd through the same formulas saved twice
    as many and was ~1.5x slower).

    forward: v, θ, ψ' [B, T, H, D], scale [T, 1, 1], m0 [B, 2, H, D] (Re, Im; None = zeros),
    reset [B, T] bool (None: no reset) → parts [B, T, 2, H, D] = (Re r, Im r) and the final
    memory [B, 2, H, D].
    backward, with (gA, gB) = ∂L/∂(A, B) summed over t' >= t (a reverse cumsum; with resets,
    over the t' >= t with no reset in (t, t']):
        ∂L/∂v = gA cos θ + gB sin θ          ∂L/∂θ = v (gB cos θ − gA sin θ)
        ∂L/∂ψ' = g_re Im r − g_im Re r       ∂L/∂m0 = (gA, gB) at t = 0 (0 if reset_0)"""

    @staticmethod
    def forward(ctx, v, theta, psi, scale, m0, reset):
        B, T, H, D = v.shape
        cos_t, sin_t = theta.cos(), theta.sin()
        bound = v.new_empty(B, T, 2, H, D)  # (v cos θ, v sin θ): 2·H·D columns for the cumsum
        torch.mul(v, cos_t, out=bound[:, :, 0])
        torch.mul(v, sin_t, out=bound[:, :, 1])
        if reset is None:
            mem = cumsum(bound, dim=1, overwrite=True)  # [B, T, 2, H, D]: (A, B)
            if m0 is not None:
                mem += m0.unsqueeze(1)
        else:
            mem = _restarting_sums(bound, reset, m0, reverse=False)
        del bound
        re, im = mem.unbind(2)
        c, s = psi.cos().mul_(scale), psi.sin().mul_(scale)  # [B, T, H, D]
        parts = torch.empty_like(mem)
        torch.mul(re, c, out=parts[:, :, 0]).addcmul_(im, s)
        torch.mul(im, c, out=parts[:, :, 1]).addcmul_(re, s, value=-1)
        ctx.save_for_backward(v, cos_t, sin_t, c, s, parts, reset)
        ctx.has_m0 = m0 is not None
        return parts, mem[:, -1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, g_parts, g_last):
        v, cos_t, sin_t, c, s, parts, reset = ctx.saved_tensors
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
        if reset is None:
            grad = cumsum(grad, dim=1, reverse=True, overwrite=True)  # summed over t' >= t
        else:
            grad = _restarting_sums(grad, reset, None, reverse=True)
        g_a, g_b = grad.unbind(2)
        d_v = torch.mul(g_a, cos_t).addcmul_(g_b, sin_t)
        d_theta = torch.mul(g_b, cos_t).addcmul_(g_a, sin_t, value=-1).mul_(v)
        if d_psi is None:
            d_psi = torch.zeros_like(v)
        d_m0 = None
        if ctx.has_m0:  # a reset at t = 0 drops m0
            d_m0 = grad[:, 0] if reset is None else grad[:, 0].masked_fill(
                reset[:, 0, None, None, None], 0.0)
        return d_v, d_theta, d_psi, None, d_m0, None
