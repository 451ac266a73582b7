"""Fused Triton kernels for the GPU paths (one module per memory, imported only when used).

On a GPU an eager PyTorch element-wise chain pays one kernel launch and one trip through memory
per pass (the phasor memory made ~20 of them and reached 0.5 % of an H100's copy bandwidth);
a Triton kernel reads each input once per pass over a tile of time steps and channels.

The ops use these kernels for CUDA tensors in float32 compute whenever triton imports (CUDA
builds of torch ship it); `HOLOLM_TRITON=0` (or `ENABLED = False`) turns them off. The tests
also run them on CPU tensors through Triton's interpreter: with `TRITON_INTERPRET=1` set
before a kernel module is imported and `ON_CPU = True`.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

ENABLED = os.environ.get("HOLOLM_TRITON", "1") != "0"
ON_CPU = False  # the tests' switch: CPU tensors through the interpreter


@functools.cache
def importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def usable(x: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether an op on `x` computing in `dtype` runs its Triton kernel (float32 only)."""
    if not (ENABLED and dtype == torch.float32 and importable()):
        return False
    return x.is_cuda or (ON_CPU and x.device.type == "cpu"
                         and os.environ.get("TRITON_INTERPRET") == "1")


def on_input_device(method):
    """An autograd Function's forward / backward run with the current CUDA device set to that
    of its first tensor argument: Triton launches on the current device, which need not be the
    tensors' (inputs on cuda:1 while cuda:0 is current)."""

    @functools.wraps(method)
    def run(ctx, *args):
        first = next((a for a in args if isinstance(a, torch.Tensor)), None)
        if first is None or not first.is_cuda:
            return method(ctx, *args)
        with torch.cuda.device(first.device):
            return method(ctx, *args)

    return run


def status() -> str:
    """One line for GPU benchmark reports: which fused kernels the CUDA paths run."""
    if not ENABLED:
        return "off (HOLOLM_TRITON=0 or ENABLED=False): eager PyTorch"
    if not importable():
        return "triton is not installed: eager PyTorch"
    from hololm.ops.triton_kernels import fla_matrix_memory

    fla = ("fla's chunked kernels for half-precision inputs" if fla_matrix_memory.available()
           else "eager PyTorch (flash-linear-attention is not installed)")
    return f"Triton on CUDA: phasor, diagonal_scan; matrix memory: {fla}"
