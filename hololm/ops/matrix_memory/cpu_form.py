"""The matrix memory's intra-chunk decay mask as fused C loops (matrix_memory.c next to this
file; float32 scores, CPU), inside the chunked form of torch_form.py."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.autograd.function import once_differentiable

from hololm.ops import kernels

KERNEL = kernels.Kernel(Path(__file__).with_name("matrix_memory.c"), {
    "decay_mask_forward": "scores:f gq:d g:d out:f chunk:i shift:i",
    "decay_mask_backward": "scores:f gq:d g:d grad_out:f grad_scores:f grad_gq:d grad_g:d "
                           "chunk:i shift:i"})


def decay_mask(scores, Gq, G, read_before_write: bool, *, lib, threads: int | None):
    """`torch_form._decay_mask` in C, for float32 work."""
    return _DecayMaskNative.apply(scores.float(), Gq, G, int(read_before_write), lib, threads)


class _DecayMaskNative(torch.autograd.Function):
    """`_decay_mask` as one C loop per direction (float32 scores, CPU). Saves the scores and
    recomputes the weights in the backward instead of keeping them."""

    @staticmethod
    def forward(ctx, scores, Gq, G, shift, lib, threads):
        C = scores.shape[-1]
        scores, Gq, G = scores.contiguous(), Gq.contiguous(), G.contiguous()
        out = torch.empty_like(scores)
        kernels.run_split(lib["decay_mask_forward"], (scores, Gq, G, out, C, shift), 0, scores,
                          scores.numel() // (C * C), C * C, 1, threads)  # blocks of C·C
        ctx.save_for_backward(scores, Gq, G)
        ctx.shift, ctx.lib, ctx.threads = shift, lib, threads
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        scores, Gq, G = ctx.saved_tensors
        C = scores.shape[-1]
        grad_out = grad_out.to(torch.float32).contiguous()
        d_scores, d_Gq, d_G = torch.empty_like(scores), torch.empty_like(Gq), torch.empty_like(G)
        kernels.run_split(
            ctx.lib["decay_mask_backward"], (scores, Gq, G, grad_out, d_scores, d_Gq, d_G, C,
                                             ctx.shift), 0, scores, scores.numel() // (C * C),
            C * C, 1, ctx.threads)
        return d_scores, d_Gq, d_G, None, None, None
