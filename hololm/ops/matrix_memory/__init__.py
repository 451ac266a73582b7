"""Gated outer-product matrix memory (HoloGPT): a fast-weight / GLA-style linear RNN
with one scalar forget gate and one scalar write gate per token and head.

Per batch row and head, with a state S_t of shape [Dk, Dv]:

    S_t = f_t S_{t-1} + w_t k_t v_tᵀ          f_t = exp(log_forget_t) (log_forget <= 0),
    y_t = S_tᵀ q_t                            w_t = write_t (None means 1)

`read_before_write=True` reads the memory before the update, y_t = S_{t-1}ᵀ q_t (HoloGPT's
code; its text reads after). Three forms compute the same function:

- `holo_scan`: the readable sequential reference (a loop over T; HoloGPT's name).
- `gated_matrix_memory`: the chunkwise-parallel form for training (Mamba-2 SSD / GLA). With Γ
  the chunk-local inclusive cumsum of log_forget and S_0 the state entering the chunk,

      y_t    = Σ_{s<=t} exp(Γ_t − Γ_s) w_s (q_t·k_s) v_s  +  exp(Γ_t) S_0ᵀ q_t
      S_next = exp(Γ_C) S_0  +  Σ_s exp(Γ_C − Γ_s) w_s k_s v_sᵀ

  read_before_write reads S_{t-1}: Γ_t on the query side becomes Γ_{t-1} = Γ_t − log f_t and
  s <= t becomes s < t. Only sums of log gates (<= 0) are exponentiated, never Γ alone with
  the wrong sign, so any decay strength is safe; they are summed in float64 over exactly the
  gates they span. The chunk-to-chunk state passing is a loop over the T / C chunks (measured
  as fast as the quadratic all-pairs form at T = 4096 and linear beyond).

  Its backends (`backend=`, hololm/ops/backends.py), side by side here: "reference"
  (`holo_scan`, reference.py), "torch" (the chunked form, torch_form.py), "cpu" (the same with
  the intra-chunk decay mask as a fused C kernel, cpu_form.py + matrix_memory.c; float32) and
  "fla" (flash-linear-attention's chunked Triton kernels, fla_form.py: CUDA, half-precision
  q, k, v as under autocast, not read_before_write; its own chunk size and numerics). "auto"
  takes fla where it applies and triton is on, C on CPU in float32, else the PyTorch form.

  Packed documents (`reset=` [B, T] bool, True at a document's first token): the state
  entering such a token is dropped, S_{t-1} → 0 before the token reads or writes (as if its
  log f were -inf), so each document's outputs are those of the document run alone from a zero
  state (the first from the initial state). In the chunked form, with doc_t = Σ_{r<=t} reset_r
  within the chunk (0: the document of S_0), the terms above are masked, never their log
  decays (-inf in the float64 cumsums would make their differences NaN):

      y_t    = Σ_{s<=t} [doc_s = doc_t] exp(Γ_t − Γ_s) w_s (q_t·k_s) v_s
               + [doc_t = 0] exp(Γ_t) S_0ᵀ q_t
      S_next = [doc_C = 0] exp(Γ_C) S_0  +  Σ_s [doc_s = doc_C] exp(Γ_C − Γ_s) w_s k_s v_sᵀ

  exact, since a start zeroes the products of gates spanning it and nothing else
  (read_before_write: the same masks on its terms; "cpu" masks the scores before its C kernel,
  which then needs no change). "fla" runs packed documents only as one varlen row (cu_seqlens,
  batch 1), so "auto" never takes it with `reset` and backend="fla" refuses it.
- `gated_matrix_memory_step`: one token, for decoding (`reset` [B]: that token starts a
  document).

Dtypes: inputs may be float16 / bfloat16 / float32 / float64. Everything is computed in
float32, or in float64 when any input (initial state included) is float64; the output and the
state are returned in that compute dtype. A given state must be float32 or wider.
"""
from __future__ import annotations

import functools

import torch

from hololm.ops import backends, triton_kernels
from hololm.ops._validate import require_positive_int
from hololm.ops.matrix_memory import cpu_form, fla_form
from hololm.ops.matrix_memory.common import (
    _compute_dtype,
    _drop_at,
    _start_state,
    _validate,
    _validate_reset,
)
from hololm.ops.matrix_memory.reference import holo_scan
from hololm.ops.matrix_memory.torch_form import chunked_matrix_memory

BACKENDS = ("reference", "torch", "cpu", "fla")
__all__ = ["BACKENDS", "gated_matrix_memory", "gated_matrix_memory_step", "holo_scan"]


@torch.compiler.disable  # see hololm/ops/__init__.py
def gated_matrix_memory(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        log_forget: torch.Tensor, write: torch.Tensor | None = None,
                        initial_state: torch.Tensor | None = None,
                        read_before_write: bool = False, chunk_size: int = 64, *,
                        reset: torch.Tensor | None = None, backend: str = "auto",
                        threads: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The memory on `backend` (one of `BACKENDS` or "auto", see the module docstring), same
    arguments and results as `holo_scan`; `chunk_size` sets the chunks of the "torch" and "cpu"
    forms, `threads` how many ways the C kernel splits the work (None: by size)."""
    _validate(q, k, v, log_forget, write, initial_state, "initial_state", read_before_write, 4)
    _validate_reset(reset, q, 4)
    require_positive_int("chunk_size", chunk_size)
    dtype = _compute_dtype(q, k, v, log_forget, write, initial_state)
    why_not_fla = fla_form.unavailable(q, k, v, read_before_write, dtype, reset)
    if backend == "fla" and why_not_fla:
        raise backends.unavailable("gated_matrix_memory", backend, why_not_fla)
    if backend == "fla" or (backend == "auto" and not why_not_fla and triton_kernels.enabled()):
        state = None if initial_state is None else initial_state.float()
        return fla_form.gated_matrix_memory_fla(q, k, v, log_forget, write, state)
    backend, lib = backends.select("gated_matrix_memory", backend, BACKENDS, q, dtype,
                                   cpu_form.KERNEL)
    if backend == "reference":
        return holo_scan(q, k, v, log_forget, write, initial_state, read_before_write,
                         reset=reset)
    mask = {} if lib is None else {"decay_mask": functools.partial(
        cpu_form.decay_mask, lib=lib, threads=threads)}
    return chunked_matrix_memory(q, k, v, log_forget, write, initial_state, read_before_write,
                                 chunk_size, dtype, reset, **mask)


def gated_matrix_memory_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                             log_forget: torch.Tensor, write: torch.Tensor | None = None,
                             state: torch.Tensor | None = None,
                             read_before_write: bool = False, *,
                             reset: torch.Tensor | None = None
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """One token: q, k [B, H, Dk], v [B, H, Dv], log_forget / write [B, H],
    state [B, H, Dk, Dv] (None = zeros), reset [B] bool (True: the token starts a document,
    `state` is dropped) → (y [B, H, Dv], new state [B, H, Dk, Dv])."""
    _validate(q, k, v, log_forget, write, state, "state", read_before_write, 3)
    _validate_reset(reset, q, 3)
    dtype = _compute_dtype(q, k, v, log_forget, write, state)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    S = _drop_at(_start_state(state, q, v, dtype), reset)
    kv = k[..., :, None] * v[..., None, :]  # [B, H, Dk, Dv]
    if write is not None:
        kv = kv * write.to(dtype)[..., None, None]
    new = log_forget.to(dtype).exp()[..., None, None] * S + kv
    read = S if read_before_write else new
    return torch.einsum("bhk,bhkv->bhv", q, read), new
