"""Gated diagonal (element-wise) linear recurrence: the LongAttention V5 memory.

Per batch row, head and channel, with decays given in log space (log_decay <= 0):

    h_t = γ_t ⊙ h_{t-1} + x_t,        γ_t = exp(log_decay_t),        h_{-1} = initial_state

Resets (packed documents): `reset` [B, T] bool marks the steps whose entering state is dropped,
h_t = x_t, as if the sequence started there (from a zero state): every form takes γ_t = 0 there
in place of exp(log_decay_t). Consequently ∂L/∂log γ_t = 0 at a reset, nothing flows back past
it, and ∂L/∂initial_state = 0 in a row whose step 0 is a reset. A reset is exact, whatever the
decay; log_decay = −inf (γ = exp(−inf) = 0, also in the C kernel's exp) drops the state too,
channel by channel, but its gradient γ_t g_t h_{t−1} is that of the decay, not a forced 0.

Three forms compute the same function:

- `gated_diagonal_scan_ref`: the readable loop over T.
- `gated_diagonal_scan`: the chunked form for training (no Python loop over T). The sequence is
  cut into n = ceil(T / C) chunks of C steps (the tail is padded with x = 0, γ = 1, which leaves
  the state unchanged). Then
    1. every chunk is scanned from a zero state, all chunks at once (a loop over the C chunk
       positions, vectorised over chunks): its final state s_k is its contribution to the carry;
    2. the states at the chunk ends obey the same recurrence on the chunk sequence,
       e_k = (Π_{t in k} γ_t) ⊙ e_{k-1} + s_k, solved by calling the scan recursively
       (depth log_C T);
    3. every chunk is scanned again, all at once, from its true entry state e_{k-1}.
  Step 3 performs exactly the reference's multiply-adds inside a chunk. Only log γ_t <= 0 is
  exponentiated and only factors in [0, 1] are multiplied, so any decay strength (0.9999 down to
  exp(-60) and below) is exact: nothing overflows, nothing is clamped, and a decay product that
  underflows to 0 is the true value rounded. Work and memory are O(B·T·H·D); no [.., C, C, ..]
  decay matrix is ever built. The backward is the same scan run backwards in time (a custom
  autograd Function):
      g_t = ∂L/∂h_t + γ_{t+1} g_{t+1},   ∂L/∂x_t = g_t,   ∂L/∂log γ_t = g_t γ_t h_{t-1},
      ∂L/∂initial_state = γ_0 g_0.
  With resets, γ_t = 0 at a reset in all three phases and in the backward, so chunks need no
  special case: a reset inside a chunk zeroes its decay product, and the carry stops there.
  It is differentiable once (no double backward).
  Its backends (`backend=`, hololm/ops/backends.py), side by side here: "reference" (the
  loop, reference.py), "torch" (the chunked form, torch_form.py), "cpu" (cpu_form.py +
  diagonal_scan.c, float32: the plain sequential recurrence forward and backward, one pass over
  time vectorised across channels, γ_t recomputed in the backward) and "triton"
  (triton_form.py, float32 on CUDA: the same three phases, each chunk of 64 steps scanned in
  parallel over its time steps). "auto" takes Triton on CUDA and C on CPU in float32.
- `gated_diagonal_scan_step`: one token, for decoding (`reset` [B] bool: rows starting afresh).

Dtypes: inputs may be float16 / bfloat16 / float32 / float64. Everything is computed in
float32, or in float64 when any input (initial state included) is float64; states and outputs
are returned in that compute dtype. A given state must be float32 or wider. log_decay > 0 (a
growing state) is not rejected but may overflow.
"""

from __future__ import annotations

import torch

from hololm.ops import backends
from hololm.ops._validate import require_positive_int
from hololm.ops.diagonal_scan import cpu_form
from hololm.ops.diagonal_scan.common import _prepare, _validate
from hololm.ops.diagonal_scan.reference import gated_diagonal_scan_ref
from hololm.ops.diagonal_scan.torch_form import _GatedDiagonalScan

DEFAULT_CHUNK_SIZE = 16  # measured: 20% faster fwd+bwd than 64 at T = 8192, H·D = 256 on CPU

BACKENDS = ("reference", "torch", "cpu", "triton")
__all__ = ["BACKENDS", "gated_diagonal_scan", "gated_diagonal_scan_ref", "gated_diagonal_scan_step"]


@torch.compiler.disable  # see hololm/ops/__init__.py
def gated_diagonal_scan(x: torch.Tensor, log_decay: torch.Tensor,
                        initial_state: torch.Tensor | None = None,
                        chunk_size: int = DEFAULT_CHUNK_SIZE, *, backend: str = "auto",
                        threads: int | None = None, reset: torch.Tensor | None = None,
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """The scan on `backend` (one of `BACKENDS` or "auto"), same contract as
    `gated_diagonal_scan_ref` (`reset` [B, T] bool included). `chunk_size` (>= 2, so that the
    recursion shrinks) sets the chunks of the "torch" form and need not divide T; it trades the
    length of the two within-chunk loops against recursion depth. The C kernel has no chunks,
    the Triton kernels have their own. `threads`: how many ways the C kernel splits the work
    (None: by size)."""
    _validate(x, log_decay, initial_state, "initial_state", 4, reset)
    if require_positive_int("chunk_size", chunk_size) < 2:
        raise ValueError(f"chunk_size must be at least 2, got {chunk_size}")
    x, log_decay, h0, dtype = _prepare(x, log_decay, initial_state, cast=False)
    backend, lib = backends.select("gated_diagonal_scan", backend, BACKENDS, x, dtype,
                                   cpu_form.KERNEL)
    if backend == "reference":
        return gated_diagonal_scan_ref(x, log_decay, initial_state, reset=reset)
    if backend == "triton":
        from hololm.ops.diagonal_scan.triton_form import gated_diagonal_scan_triton

        # the kernels read half-precision inputs themselves: no float32 copies made first
        h = gated_diagonal_scan_triton(x, log_decay, h0, reset)
    else:
        x, log_decay = x.to(dtype), log_decay.to(dtype)
        if backend == "cpu":
            h = cpu_form._GatedDiagonalScanNative.apply(x, log_decay, h0, lib, threads, reset)
        else:
            h = _GatedDiagonalScan.apply(x, log_decay, h0, chunk_size, reset)
    # a copy, so that keeping the state for decoding does not keep all of h alive
    return h, h[:, -1].clone()


def gated_diagonal_scan_step(x: torch.Tensor, log_decay: torch.Tensor,
                             state: torch.Tensor | None = None, *,
                             reset: torch.Tensor | None = None,
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """One token. x, log_decay: [B, H, D]; state: [B, H, D] or None (zeros); reset: [B] bool
    or None, True for the rows whose state is dropped (h = x). Returns (h, new_state), which
    are equal: the layer reads the state itself."""
    _validate(x, log_decay, state, "state", 3, reset)
    x, log_decay, state, _ = _prepare(x, log_decay, state)
    decayed = log_decay.exp() * state  # [B, H, D]
    if reset is not None:  # `where`: the dropped state and its decay get no gradient
        decayed = torch.where(reset[:, None, None], 0.0, decayed)
    h = decayed + x
    return h, h
