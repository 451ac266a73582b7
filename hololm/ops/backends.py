"""The backend an op runs, chosen by its `backend=` argument: "auto" (the default) picks the
fastest that can run the inputs here; a named one runs or raises BackendUnavailableError
saying why. The names, where an op has them:

    "reference"  the loop over T, the definition the tests compare against
    "torch"      the parallel / chunked PyTorch form (any device, any dtype)
    "cpu"        the fused C kernels (CPU tensors, float32 compute)
    "triton"     the fused Triton kernels (CUDA tensors, float32 compute; CPU tensors only
                 through Triton's interpreter, TRITON_INTERPRET=1, as the tests run them)
    "fla"        flash-linear-attention's kernels (the matrix memory, see its fla_form.py)

"auto" on CUDA takes Triton unless `HOLOLM_TRITON=0`, on CPU in float32 the C kernels unless
`HOLOLM_NATIVE=0` or they cannot be built (one warning), else the PyTorch form.
"""

from __future__ import annotations

import torch

from hololm.errors import BackendUnavailableError
from hololm.ops import kernels, triton_kernels


def check_name(op: str, backend, choices: tuple[str, ...]) -> None:
    if not isinstance(backend, str) or backend not in ("auto", *choices):
        raise BackendUnavailableError(f"{op}: unknown backend {backend!r}; choose from "
                                      f"{', '.join(('auto', *choices))}")


def unavailable(op: str, backend: str, why: str) -> BackendUnavailableError:
    return BackendUnavailableError(f"{op}: backend {backend!r} is unavailable: {why}")


def select(op: str, backend: str, choices: tuple[str, ...], x: torch.Tensor,
           dtype: torch.dtype, kernel: kernels.Kernel | None = None
           ) -> tuple[str, dict[str, kernels.Function] | None]:
    """(the backend to run, the C library when it is "cpu") for inputs like `x` computing in
    `dtype`; raises BackendUnavailableError for a named backend that cannot run them."""
    check_name(op, backend, choices)
    cpu_fp32 = x.device.type == "cpu" and dtype == torch.float32
    if backend == "auto":
        if "triton" in choices and triton_kernels.usable(x, dtype):
            return "triton", None
        lib = kernel.library() if kernel is not None and cpu_fp32 and kernels.enabled() else None
        return ("cpu", lib) if lib is not None else ("torch", None)
    if backend == "cpu":
        if not cpu_fp32:
            raise unavailable(op, backend, f"the C kernels take CPU tensors computing in "
                              f"float32, got {x.device.type} tensors computing in {dtype}")
        try:
            return backend, kernel.load()
        except (RuntimeError, OSError) as err:
            raise unavailable(op, backend, f"the C kernel is not compiled ({err})") from err
    if backend == "triton" and (why := triton_kernels.unavailable(x, dtype)):
        raise unavailable(op, backend, why)
    return backend, None


# fla takes packed documents only as one varlen row (cu_seqlens with batch 1), not as resets
# inside a batch of rows: ops given `reset` stay on their PyTorch forms
FLA_NO_RESET = ("document resets (reset=) are not supported: fla runs packed documents only as "
                "one varlen row (cu_seqlens, batch 1)")


def fla_unsuitable(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   dtype: torch.dtype) -> str | None:
    """Why flash-linear-attention's kernels cannot take these inputs (None: they can): CUDA
    tensors, q, k, v of one half-precision dtype, and no float64 input (`dtype` is the op's
    compute dtype). fla's float32 dot products run in TF32, below the float32 contract of
    hololm's ops, so float32 inputs stay on the PyTorch forms."""
    if not q.is_cuda:
        return f"wrong device: fla's kernels take CUDA tensors, got {q.device.type}"
    if not (q.dtype in (torch.bfloat16, torch.float16) and q.dtype == k.dtype == v.dtype
            and dtype == torch.float32):
        return (f"wrong dtype: fla runs q, k, v of one half-precision dtype, got {q.dtype}, "
                f"{k.dtype}, {v.dtype} computing in {dtype}")
    return None
