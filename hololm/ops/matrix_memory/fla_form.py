"""The gated matrix memory through flash-linear-attention's chunked kernels (`fla`, optional:
`pip install fla-core`), used on CUDA when it is installed. hololm's memory is fla's simple GLA:
one scalar log-forget gate per token and head, S_t = exp(g_t) S_{t-1} + k_t v_tᵀ, y_t = S_tᵀ q_t,
with the write gate folded into the values and no query scaling. fla does not read before
writing; that variant stays on the PyTorch form.

Used for half-precision q, k, v only (autocast training): fla's dot products on float32 inputs
run in TF32, below the float32 contract of hololm's ops, so float32 inputs stay on the PyTorch
form. fla's numerics differ from hololm's chunked form in ways the GPU tests bound (2e-2
relative RMS at T = 8195): it keeps chunk states and rounds the output in the inputs' half
precision, sums the log gates in float32 (hololm in float64) and uses its own chunk size."""

from __future__ import annotations

import functools

import torch

from hololm.ops import backends


@functools.cache
def available() -> bool:
    """fla imports and is new enough for the [B, T, H, D] layout (0.4 and later)."""
    try:
        import fla
        from fla.ops.simple_gla import chunk_simple_gla  # noqa: F401
    except Exception:  # fla is optional, and its import can fail in many ways (triton, CUDA)
        return False
    major, minor = (int(part) for part in fla.__version__.split(".")[:2])
    return (major, minor) >= (0, 4)


def unavailable(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, read_before_write: bool,
                dtype: torch.dtype = torch.float32, reset: torch.Tensor | None = None
                ) -> str | None:
    """Why the fla path cannot run (None: it can): it takes CUDA tensors, q, k, v in one
    half-precision dtype (no float64 input: `dtype` is the op's compute dtype), reading after
    writing, no document resets, and fla installed."""
    if reset is not None:
        return backends.FLA_NO_RESET
    if why := backends.fla_unsuitable(q, k, v, dtype):
        return why
    if read_before_write:
        return "fla does not read before writing"
    return None if available() else "flash-linear-attention (fla-core >= 0.4) is not installed"


def applies(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, read_before_write: bool) -> bool:
    """Whether "auto" may take the fla path for these inputs."""
    return unavailable(q, k, v, read_before_write) is None


def gated_matrix_memory_fla(q, k, v, log_forget, write, initial_state
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """q, k [B, T, H, Dk], v [B, T, H, Dv] of one dtype, log_forget / write [B, T, H],
    initial_state [B, H, Dk, Dv] float32 or None → (y [B, T, H, Dv], final state
    [B, H, Dk, Dv]), float32. fla accumulates its dot products in float32."""
    from fla.ops.simple_gla import chunk_simple_gla

    if write is not None:
        v = v * write.to(v.dtype)[..., None]
    y, state = chunk_simple_gla(q, k, v, g=log_forget.float(),
                                scale=1.0, initial_state=initial_state,
                                output_final_state=True)
    return y.float(), state.float()
