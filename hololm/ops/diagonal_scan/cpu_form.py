"""The gated diagonal scan as fused C loops (diagonal_scan.c next to this file; float32, CPU)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.autograd.function import once_differentiable

from hololm.ops import kernels

KERNEL = kernels.Kernel(Path(__file__).with_name("diagonal_scan.c"), {
    "diagonal_scan_forward": "x:f log_decay:f h0:f reset:b? h:f",
    "diagonal_scan_backward": "log_decay:f h:f h0:f reset:b? grad_h:f dx:f dlog:f dh0:f"})


class _GatedDiagonalScanNative(torch.autograd.Function):
    """`_GatedDiagonalScan` as one C loop per direction (float32, CPU). Saves log γ (the input)
    and h (and the [B, T] resets, None without), and recomputes γ in the backward instead of
    keeping it."""

    @staticmethod
    def forward(ctx, x, log_decay, h0, lib, threads, reset):
        B, T, H, D = x.shape
        C = H * D
        x, log_decay, h0 = x.contiguous(), log_decay.contiguous(), h0.contiguous()
        reset = None if reset is None else reset.contiguous()  # [B, T]
        h = torch.empty_like(x)
        kernels.run_split(lib["diagonal_scan_forward"], (x, log_decay, h0, reset, h), 1, x, B,
                          T, C, threads)  # 1 state row: h
        ctx.save_for_backward(log_decay, h, h0, reset)
        ctx.lib, ctx.threads = lib, threads
        return h

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_h):
        log_decay, h, h0, reset = ctx.saved_tensors
        B, T, H, D = h.shape
        C = H * D
        grad_h = grad_h.to(torch.float32).contiguous()
        d_x, d_log, d_h0 = torch.empty_like(h), torch.empty_like(h), torch.empty_like(h0)
        kernels.run_split(  # 2 state rows: g and the next step's decay
            ctx.lib["diagonal_scan_backward"],
            (log_decay, h, h0, reset, grad_h, d_x, d_log, d_h0), 2, h, B, T, C, ctx.threads)
        return d_x, d_log, d_h0, None, None, None
