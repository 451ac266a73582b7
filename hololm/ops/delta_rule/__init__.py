"""Gated delta rule (Gated DeltaNet): a matrix memory that overwrites what a key held instead of
adding to it. Per batch row and head, with a state S_t of shape [Dk, Dv]:

    S_t = f_t (I − β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ      f_t = exp(log_forget_t) ∈ (0, 1]
    y_t = S_tᵀ q_t                                           β_t ∈ [0, 1], ‖k_t‖ = 1

Equivalently S_t = S' + β_t k_t (v_t − S'ᵀ k_t)ᵀ with S' = f_t S_{t-1}: the memory's answer for
k_t moves a fraction β_t of the way to v_t (one step of online regression), so a key written
twice holds its last value rather than the sum. Three forms compute the same function:

- `gated_delta_rule_ref`: the readable sequential loop (reference.py).
- `gated_delta_rule`: the chunkwise-parallel form for training (the WY / UT-transform form of
  DeltaNet and Gated DeltaNet). Within a chunk of C tokens entering with state S_0, with G the
  chunk-local inclusive cumsum of log_forget and Γ_ij = exp(G_i − G_j) for j <= i, the
  pseudo-values u_t = β_t (v_t − f_t S_{t-1}ᵀ k_t) solve the unit lower-triangular system

      (I + tril₋₁(diag(β) (K Kᵀ ⊙ Γ))) U = diag(β) V − diag(β e^G) K S_0

  so U = Ũ − W S_0 with Ũ = T diag(β) V and W = T diag(β e^G) K (one triangular solve per chunk,
  T the inverse). Then

      Y      = diag(e^G) Q S_0 + tril(Q Kᵀ ⊙ Γ) U
      S_next = e^{G_C} S_0 + (K ⊙ e^{G_C − G})ᵀ U

  Everything but S_0 is computed for all chunks at once; the chunk-to-chunk pass is a loop of
  one matmul-add per chunk. Only sums of log gates over the gates they span are exponentiated
  (all <= 0), summed in float64. Backends (`backend=`, hololm/ops/backends.py): "reference",
  "torch" (this form, torch_form.py) and "fla" (flash-linear-attention's chunked Triton
  kernels, fla_form.py: CUDA, half-precision q, k, v as under autocast; its own numerics).
  "auto" takes fla where it applies and triton is on, else the PyTorch form.

  Packed documents (`reset=` [B, T] bool, True at a document's first token): the state
  entering such a token is dropped, S_{t-1} → 0 (f_t → 0), so each document's outputs are
  those of the document run alone from a zero state (the first from the initial state). The
  recurrence is linear in the state, so this only zeroes the gate products that span a start:
  with doc_i = Σ_{r<=i} reset_r within the chunk (0: the document of S_0), Γ_ij gets the factor
  [doc_i = doc_j], e^{G_i} (S_0 seen by i) [doc_i = 0], e^{G_C − G_j} [doc_j = doc_C] and e^{G_C}
  [doc_C = 0]: exact 0/1 masks on the terms, never -inf log gates (whose differences in the
  float64 cumsums would be NaN). "fla" runs packed documents only as one varlen row
  (cu_seqlens, batch 1), so "auto" never takes it with `reset` and backend="fla" refuses it.
- `gated_delta_rule_step`: one token, for decoding (`reset` [B]: that token starts a
  document).

`log_forget=None` is the ungated delta rule (f = 1). Dtypes: inputs may be float16 / bfloat16 /
float32 / float64; everything is computed in float32, or float64 when any input is float64; the
output and the state are returned in that dtype. A given state must be float32 or wider.
"""

from __future__ import annotations

import torch

from hololm.ops import backends, triton_kernels
from hololm.ops._validate import require_positive_int
from hololm.ops.delta_rule import fla_form
from hololm.ops.delta_rule.reference import _update, _validate, gated_delta_rule_ref
from hololm.ops.delta_rule.torch_form import chunked_delta_rule
from hololm.ops.matrix_memory.common import (
    _compute_dtype,
    _drop_at,
    _start_state,
    _validate_reset,
)

BACKENDS = ("reference", "torch", "fla")
__all__ = ["BACKENDS", "gated_delta_rule", "gated_delta_rule_ref", "gated_delta_rule_step"]


@torch.compiler.disable  # see hololm/ops/__init__.py
def gated_delta_rule(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor,
                     log_forget: torch.Tensor | None = None,
                     initial_state: torch.Tensor | None = None, chunk_size: int = 64, *,
                     reset: torch.Tensor | None = None, backend: str = "auto"
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The rule on `backend` (one of `BACKENDS` or "auto", see the module docstring), same
    arguments and results as `gated_delta_rule_ref`; `chunk_size` sets the chunks of the
    "torch" form."""
    _validate(q, k, v, beta, log_forget, initial_state, "initial_state", 4)
    _validate_reset(reset, q, 4)
    require_positive_int("chunk_size", chunk_size)
    dtype = _compute_dtype(q, k, v, beta, log_forget, initial_state)
    why_not_fla = fla_form.unavailable(q, k, v, dtype, reset)
    if backend == "fla" and why_not_fla:
        raise backends.unavailable("gated_delta_rule", backend, why_not_fla)
    if backend == "fla" or (backend == "auto" and not why_not_fla and triton_kernels.enabled()):
        state = None if initial_state is None else initial_state.float()
        return fla_form.gated_delta_rule_fla(q, k, v, beta, log_forget, state)
    backend, _ = backends.select("gated_delta_rule", backend, BACKENDS, q, dtype)
    if backend == "reference":
        return gated_delta_rule_ref(q, k, v, beta, log_forget, initial_state, reset=reset)
    return chunked_delta_rule(q, k, v, beta, log_forget, initial_state, chunk_size, dtype, reset)


def gated_delta_rule_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor,
                          log_forget: torch.Tensor | None = None,
                          state: torch.Tensor | None = None, *,
                          reset: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One token: q, k [B, H, Dk], v [B, H, Dv], beta / log_forget [B, H], state [B, H, Dk, Dv]
    (None = zeros), reset [B] bool (True: the token starts a document, `state` is dropped)
    → (y [B, H, Dv], new state [B, H, Dk, Dv])."""
    _validate(q, k, v, beta, log_forget, state, "state", 3)
    _validate_reset(reset, q, 3)
    dtype = _compute_dtype(q, k, v, beta, log_forget, state)
    f = None if log_forget is None else log_forget.to(dtype).exp()
    S = _drop_at(_start_state(state, q, v, dtype), reset)
    return _update(S, q.to(dtype), k.to(dtype), v.to(dtype), beta.to(dtype), f)
