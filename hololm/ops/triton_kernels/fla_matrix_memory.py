"""The gated matrix memory through flash-linear-attention's chunked kernels (`fla`, optional:
`pip install fla-core`), used on CUDA when it is installed. hololm's memory is fla's simple GLA:
one scalar log-forget gate per token and head, S_t = exp(g_t) S_{t-1} + k_t v_tᵀ, y_t = S_tᵀ q_t,
with the write gate folded into the values and no query scaling. fla does not read before
writing; that variant stays on the PyTorch form."""

from __future__ import annotations

import functools

import torch


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


def gated_matrix_memory_fla(q, k, v, log_forget, write, initial_state
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """q, k [B, T, H, Dk], v [B, T, H, Dv], log_forget / write [B, T, H], initial_state
    [B, H, Dk, Dv] float32 or None → (y [B, T, H, Dv], final state [B, H, Dk, Dv]), float32.
    q, k and v go in as one dtype (bf16 under autocast); fla accumulates in float32."""
    from fla.ops.simple_gla import chunk_simple_gla

    dtype = q.dtype if q.dtype == k.dtype == v.dtype else torch.float32
    if write is not None:
        v = v * write.to(v.dtype)[..., None]
    y, state = chunk_simple_gla(q.to(dtype), k.to(dtype), v.to(dtype), g=log_forget.float(),
                                scale=1.0, initial_state=initial_state,
                                output_final_state=True)
    return y.float(), state.float()
