"""Fused Triton kernels for the GPU paths (each next to its op: hololm/ops/<op>/triton_form.py,
imported only when used).

On a GPU an eager PyTorch element-wise chain pays one kernel launch and one trip through memory
per pass (the phasor memory made ~20 of them and reached 0.5 % of an H100's copy bandwidth);
a Triton kernel reads each input once per pass over a tile of time steps and channels.

The "auto" backends use these kernels for CUDA tensors in float32 compute whenever triton
imports (CUDA builds of torch ship it) and `HOLOLM_TRITON` is not 0. `backend="triton"` also
runs them on CPU tensors through Triton's interpreter (TRITON_INTERPRET=1 set before triton is
imported), as the tests do.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch


def enabled() -> bool:
    """Whether the "auto" backends may pick Triton (`HOLOLM_TRITON=0`: never)."""
    return os.environ.get("HOLOLM_TRITON", "1") != "0"


@functools.cache
def importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def unavailable(x: torch.Tensor, dtype: torch.dtype) -> str | None:
    """Why the Triton kernels cannot run an op on `x` computing in `dtype` (None: they can)."""
    if not importable():
        return "triton is not installed"
    if dtype != torch.float32:
        return f"wrong dtype: the kernels compute in float32, these inputs in {dtype}"
    if not (x.is_cuda or (x.device.type == "cpu" and interpreted())):
        return (f"wrong device: {x.device.type} tensors (CPU tensors run only through Triton's "
                "interpreter, TRITON_INTERPRET=1)")
    return None


def usable(x: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether "auto" runs an op on `x` computing in `dtype` through Triton: CUDA only."""
    return enabled() and x.is_cuda and unavailable(x, dtype) is None


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
    if not enabled():
        return "off (HOLOLM_TRITON=0): eager PyTorch"
    if not importable():
        return "triton is not installed: eager PyTorch"
    from hololm.ops.matrix_memory import fla_form

    fla = ("fla's chunked kernels for half-precision inputs" if fla_form.available()
           else "eager PyTorch (flash-linear-attention is not installed)")
    return f"Triton on CUDA: phasor, diagonal_scan; matrix memory: {fla}"
