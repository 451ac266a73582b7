"""Triton kernels of the gated diagonal scan (math and PyTorch form: __init__.py, torch_form.py)
for CUDA tensors: h_t = γ_t ⊙ h_{t-1} + x_t over [B, T, C] (C = H·D contiguous channels).

The PyTorch form's three phases, each one kernel launch over (chunks of BLOCK_T steps, channel
blocks, batch rows), so that even batch 1 fills the GPU:
  1. every chunk is scanned from a zero state (`tl.associative_scan` over the maps h -> γ h + x
     of its steps); its decay product and final state are kept, [B, N, C];
  2. the states at the chunk ends obey the same recurrence over the N chunks, solved by the same
     scan, recursively (depth log_BLOCK_T T);
  3. every chunk is scanned again and offset by its entry state: h = h_local + (Π γ) ⊙ entry.
As in the PyTorch form only factors in [0, 1] are multiplied, so any decay strength is exact.
Resets (a [B, T] mask, read by the kernels when RESET) take γ_t = 0 where the tiles load the
decays, in both directions: a chunk's decay product and the carry then stop at the reset, so
phase 2 needs no mask (it scans those products); the decays are never summed in log space, so
a reset is no −inf to subtract. The backward is the same scan backwards in time with the decays
shifted by one step; its third phase also writes ∂L/∂log γ and ∂L/∂h0. γ is recomputed from
log γ (the saved input) in every pass, and every pass reads its inputs once.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from hololm.ops.triton_kernels import on_input_device

# Steps per chunk and (at most) channels per program: a [64, 64] fp32 tile per scan. Neither is
# tuned (written without a GPU); BLOCK_T also sets the recursion depth.
BLOCK_T = 64
BLOCK_C = 64
# compiled for sm_90 here (tests/ops/test_triton_compile.py): at 4 warps the backward's last
# kernel needs 255 registers and spills; at 8 warps no kernel spills
NUM_WARPS = 8


@triton.jit
def _decay(log):
    """γ = exp(log γ), float32, elementwise. From γ = 1/2 up, where a state keeps many steps and
    a bias in γ compounds over them, γ = 1 + expm1(log γ) by expm1's series to the 9th power
    (truncation < 1.5e-8 on [−ln 2, 0]), rounded once: on a GPU `tl.exp` is ex2.approx (up to
    2 ulp off), and a 2-ulp bias, emulated in the interpreter, made the state of γ ≈ 0.999-0.9999
    over 8k steps 2e-4 off the float64 reference, against 5e-7 with this series."""
    p = 1.0 + log * (1.0 / 9.0)
    p = 1.0 + log * (1.0 / 8.0) * p
    p = 1.0 + log * (1.0 / 7.0) * p
    p = 1.0 + log * (1.0 / 6.0) * p
    p = 1.0 + log * (1.0 / 5.0) * p
    p = 1.0 + log * (1.0 / 4.0) * p
    p = 1.0 + log * (1.0 / 3.0) * p
    p = 1.0 + log * 0.5 * p
    return tl.where(log >= -0.6931471805599453, 1.0 + log * p, tl.exp(log))


@triton.jit
def _combine(a1, b1, a2, b2):
    """The map h -> a1 h + b1, then h -> a2 h + b2."""
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _tile(T, C, BACKWARD: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    """This program's chunk of steps and block of channels: the time index of each step in
    scan order (backwards in time in the backward) [BLOCK_T], the channels [BLOCK_C], and the
    offsets into [B, T, C] and the mask, [BLOCK_T, BLOCK_C]."""
    step = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    if BACKWARD:
        t = T - 1 - step
    else:
        t = step
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    row = tl.program_id(2).to(tl.int64) * T + t  # B·T·C may pass 2^31
    offs = row[:, None] * C + c[None, :]
    mask = (step < T)[:, None] & (c < C)[None, :]
    return t, c, offs, mask


@triton.jit
def _is_reset(reset_ptr, t, T):
    """[BLOCK_T, 1] bool: whether step t (of this program's batch row) drops its entering state
    (reset [B, T] uint8); False outside [0, T)."""
    inside = (t >= 0) & (t < T)
    row = tl.program_id(2).to(tl.int64) * T + t
    return (tl.load(reset_ptr + row, mask=inside, other=0) != 0)[:, None]


@triton.jit
def _scan_tile(x_ptr, decay_ptr, reset_ptr, t, offs, mask, T, C, BACKWARD: tl.constexpr,
               LOG: tl.constexpr, RESET: tl.constexpr):
    """The tile's scan from a zero state: (Π γ, h) after each of its steps [BLOCK_T, BLOCK_C].
    Steps past the end have x = 0, γ = 1, which leave the state unchanged. Decays are given as
    log γ (`LOG`) or as γ, and are 0 at a reset step; in the backward step t decays by γ_{t+1}
    (1 at the last step)."""
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    step = t
    if BACKWARD:
        offs, mask, step = offs + C, mask & (t + 1 < T)[:, None], t + 1
    decay = tl.load(decay_ptr + offs, mask=mask).to(tl.float32)
    if LOG:
        decay = _decay(decay)
    decay = tl.where(mask, decay, 1.0)
    if RESET:
        decay = tl.where(_is_reset(reset_ptr, step, T), 0.0, decay)
    return tl.associative_scan((decay, x), 0, _combine)


@triton.jit
def _entry(h0_ptr, ends_ptr, c, C):
    """The state [BLOCK_C] this program's chunk starts from: h0 [B, C] for the first chunk,
    else the previous chunk's end, ends [B, N, C]."""
    b, k = tl.program_id(2).to(tl.int64), tl.program_id(0)
    if k == 0:
        e = tl.load(h0_ptr + b * C + c, mask=c < C, other=0.0)
    else:
        e = tl.load(ends_ptr + (b * tl.num_programs(0) + k - 1) * C + c, mask=c < C, other=0.0)
    return e


@triton.jit
def _row(tile, i, BLOCK_T: tl.constexpr):
    """Row i [BLOCK_C] of a [BLOCK_T, BLOCK_C] tile."""
    return tl.sum(tl.where((tl.arange(0, BLOCK_T) == i)[:, None], tile, 0.0), 0)


@triton.jit
def _chunk_ends_kernel(x_ptr, decay_ptr, reset_ptr, prod_ptr, end_ptr, T, C,
                       BACKWARD: tl.constexpr, LOG: tl.constexpr, RESET: tl.constexpr,
                       BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    """Phase 1: every chunk's decay product and final state from a zero state, [B, N, C] in
    scan order."""
    t, c, offs, mask = _tile(T, C, BACKWARD, BLOCK_T, BLOCK_C)
    prod, h = _scan_tile(x_ptr, decay_ptr, reset_ptr, t, offs, mask, T, C, BACKWARD, LOG, RESET)
    chunk = (tl.program_id(2).to(tl.int64) * tl.num_programs(0) + tl.program_id(0)) * C + c
    tl.store(prod_ptr + chunk, _row(prod, BLOCK_T - 1, BLOCK_T), mask=c < C)
    tl.store(end_ptr + chunk, _row(h, BLOCK_T - 1, BLOCK_T), mask=c < C)


@triton.jit
def _states_kernel(x_ptr, decay_ptr, reset_ptr, h0_ptr, ends_ptr, h_ptr, T, C,
                   LOG: tl.constexpr, RESET: tl.constexpr, BLOCK_T: tl.constexpr,
                   BLOCK_C: tl.constexpr):
    """Phase 3 of the forward: all states [B, T, C], each chunk from its entry state."""
    t, c, offs, mask = _tile(T, C, False, BLOCK_T, BLOCK_C)
    prod, h = _scan_tile(x_ptr, decay_ptr, reset_ptr, t, offs, mask, T, C, False, LOG, RESET)
    h += prod * _entry(h0_ptr, ends_ptr, c, C)[None, :]
    tl.store(h_ptr + offs, h, mask=mask)


@triton.jit
def _grad_kernel(grad_h_ptr, log_ptr, reset_ptr, zero_ptr, ends_ptr, h_ptr, h0_ptr, dx_ptr,
                 dlog_ptr, dh0_ptr, T, C, RESET: tl.constexpr, BLOCK_T: tl.constexpr,
                 BLOCK_C: tl.constexpr):
    """Phase 3 of the backward: g_t = ∂L/∂h_t + γ_{t+1} g_{t+1} (zero_ptr: the zero state after
    the last step, [B, C]), written as ∂L/∂x_t, with ∂L/∂log γ_t = g_t γ_t h_{t-1} and
    ∂L/∂h0 = γ_0 g_0 (h_{-1} = h0; γ_t = 0 at a reset)."""
    t, c, offs, mask = _tile(T, C, True, BLOCK_T, BLOCK_C)
    prod, g = _scan_tile(grad_h_ptr, log_ptr, reset_ptr, t, offs, mask, T, C, True, True, RESET)
    g += prod * _entry(zero_ptr, ends_ptr, c, C)[None, :]
    tl.store(dx_ptr + offs, g, mask=mask)
    gamma = _decay(tl.load(log_ptr + offs, mask=mask, other=0.0).to(tl.float32))
    if RESET:
        gamma = tl.where(_is_reset(reset_ptr, t, T), 0.0, gamma)
    g_gamma = g * gamma
    h0 = tl.load(h0_ptr + tl.program_id(2).to(tl.int64) * C + c, mask=c < C, other=0.0)
    h_prev = tl.load(h_ptr + offs - C, mask=mask & (t > 0)[:, None], other=0.0)
    h_prev = tl.where((t == 0)[:, None], h0[None, :], h_prev)
    tl.store(dlog_ptr + offs, g_gamma * h_prev, mask=mask)
    if tl.program_id(0) == tl.num_programs(0) - 1:  # the chunk holding t = 0
        last = (T - 1) % BLOCK_T
        dh0 = _row(g_gamma, last, BLOCK_T)
        tl.store(dh0_ptr + tl.program_id(2).to(tl.int64) * C + c, dh0, mask=c < C)


def _grid(B: int, T: int, C: int) -> tuple[tuple[int, int, int], int]:
    """Launch grid (chunks on the axis without the 65535 limit) and the channel block, no wider
    than the channels."""
    block_c = min(BLOCK_C, triton.next_power_of_2(C))
    return (triton.cdiv(T, BLOCK_T), triton.cdiv(C, block_c), B), block_c


def _chunk_ends(x: torch.Tensor, decay: torch.Tensor, reset: torch.Tensor | None,
                h0: torch.Tensor, backward: bool, log: bool) -> torch.Tensor:
    """Phases 1 and 2: the state at the end of every chunk, in scan order [B, N, C] (h0 itself
    when there is one chunk, as the kernels then never read it). `reset`: [B, T] uint8 or
    None."""
    B, T, C = x.shape
    grid, block_c = _grid(B, T, C)
    if grid[0] == 1:
        return h0
    prod, end = (x.new_empty(B, grid[0], C, dtype=torch.float32) for _ in range(2))
    # the chunks' decay products already hold the resets' zeros: their scan needs no mask
    _chunk_ends_kernel[grid](x, decay, _mask_arg(reset, x), prod, end, T, C, BACKWARD=backward,
                             LOG=log, RESET=reset is not None, BLOCK_T=BLOCK_T,
                             BLOCK_C=block_c, num_warps=NUM_WARPS)
    return _scan(end, prod, None, h0, log=False)


def _mask_arg(reset: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """The reset pointer a kernel takes: the mask, or (RESET off, never read) any tensor."""
    return like if reset is None else reset


def _scan(x: torch.Tensor, decay: torch.Tensor, reset: torch.Tensor | None, h0: torch.Tensor,
          log: bool) -> torch.Tensor:
    """All states [B, T, C] (float32) of h_t = γ_t ⊙ h_{t-1} + x_t from h0 [B, C], the decays
    given as log γ (`log`) or as γ, γ_t = 0 where `reset` [B, T] (uint8, or None) is set.
    Contiguous inputs of any float dtype."""
    B, T, C = x.shape
    ends = _chunk_ends(x, decay, reset, h0, backward=False, log=log)
    h = torch.empty(B, T, C, dtype=torch.float32, device=x.device)
    grid, block_c = _grid(B, T, C)
    _states_kernel[grid](x, decay, _mask_arg(reset, x), h0, ends, h, T, C, LOG=log,
                         RESET=reset is not None, BLOCK_T=BLOCK_T, BLOCK_C=block_c,
                         num_warps=NUM_WARPS)
    return h


class _GatedDiagonalScanTriton(torch.autograd.Function):
    """`_GatedDiagonalScan` in Triton kernels (float32 compute, CUDA). Saves log γ (the input,
    in its own dtype), h, h0 and the resets ([B, T] uint8, or None); the backward allocates
    only its outputs and [B, N, C] chunk buffers."""

    @staticmethod
    @on_input_device
    def forward(ctx, x: torch.Tensor, log_decay: torch.Tensor, h0: torch.Tensor,
                reset: torch.Tensor | None) -> torch.Tensor:
        B, T, H, D = x.shape
        x, log_decay = (t.contiguous().view(B, T, H * D) for t in (x, log_decay))  # [B, T, C]
        h0 = h0.contiguous().view(B, H * D)
        reset = None if reset is None else reset.to(torch.uint8).contiguous()  # [B, T]
        h = _scan(x, log_decay, reset, h0, log=True)
        ctx.save_for_backward(log_decay, h, h0, reset)
        ctx.shape = (B, T, H, D)
        return h.view(B, T, H, D)

    @staticmethod
    @once_differentiable
    @on_input_device
    def backward(ctx, grad_h: torch.Tensor):
        log_decay, h, h0, reset = ctx.saved_tensors
        B, T, C = h.shape
        grad_h = grad_h.contiguous().view(B, T, C)  # the gradient of a sum is an expanded one
        zero = torch.zeros_like(h0)
        ends = _chunk_ends(grad_h, log_decay, reset, zero, backward=True, log=True)
        d_x, d_log, d_h0 = torch.empty_like(h), torch.empty_like(h), torch.empty_like(h0)
        grid, block_c = _grid(B, T, C)
        _grad_kernel[grid](grad_h, log_decay, _mask_arg(reset, h), zero, ends, h, h0, d_x, d_log,
                           d_h0, T, C, RESET=reset is not None, BLOCK_T=BLOCK_T,
                           BLOCK_C=block_c, num_warps=NUM_WARPS)
        shape = ctx.shape
        return d_x.view(shape), d_log.view(shape), d_h0.view(shape[0], *shape[2:]), None


def gated_diagonal_scan_triton(x: torch.Tensor, log_decay: torch.Tensor, h0: torch.Tensor,
                               reset: torch.Tensor | None = None) -> torch.Tensor:
    """All states h [B, T, H, D] (float32) from x, log_decay [B, T, H, D] (float32, bfloat16 or
    float16, read as float32 in the kernels), h0 [B, H, D] float32 and reset [B, T] bool (or
    None), on one CUDA device (or CPU tensors under Triton's interpreter)."""
    return _GatedDiagonalScanTriton.apply(x, log_decay, h0, reset)
