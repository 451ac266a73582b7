"""The gated delta rule through flash-linear-attention's chunked kernels (`fla`, optional:
`pip install fla-core`), on CUDA for half-precision q, k, v (autocast training). hololm's rule is
fla's gated delta rule with the log-forget gate as `g`, β as `beta`, no query scaling and keys
normalised by the caller. As for the additive memory (matrix_memory/fla_form.py), float32 inputs
stay on the PyTorch form: fla's float32 dot products run in TF32. fla keeps chunk states and
rounds its output in the inputs' half precision and sums log gates in float32; the GPU tests
bound the difference from hololm's chunked form."""

from __future__ import annotations

import functools

import torch

from hololm.ops import backends


@functools.cache
def available() -> bool:
    """fla imports and has the gated delta rule."""
    try:
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule  # noqa: F401
    except Exception:  # fla is optional, and its import can fail in many ways (triton, CUDA)
        return False
    return True


def unavailable(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                dtype: torch.dtype = torch.float32, reset: torch.Tensor | None = None
                ) -> str | None:
    """Why the fla path cannot run (None: it can): inputs fla takes, no document resets, and
    fla installed."""
    if reset is not None:
        return backends.FLA_NO_RESET
    if why := backends.fla_unsuitable(q, k, v, dtype):
        return why
    return None if available() else "flash-linear-attention (fla-core) is not installed"


def gated_delta_rule_fla(q, k, v, beta, log_forget, initial_state
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """q, k [B, T, H, Dk], v [B, T, H, Dv] of one dtype, beta / log_forget [B, T, H] (log_forget
    None: no decay), initial_state [B, H, Dk, Dv] float32 or None → (y [B, T, H, Dv], final
    state [B, H, Dk, Dv]), float32."""
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule

    g = torch.zeros_like(beta, dtype=torch.float32) if log_forget is None else log_forget.float()
    y, state = chunk_gated_delta_rule(q, k, v, g=g, beta=beta.to(q.dtype), scale=1.0,
                                      initial_state=initial_state, output_final_state=True)
    return y.float(), state.float()
