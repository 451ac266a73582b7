"""The phasor memory (the math: __init__.py) as Triton kernels: the same real formulas as
`_PhasorMemory`, with the cumulative sum over time done in two passes so that every tile of
BLOCK_T steps × BLOCK_C channels is its own program (full parallelism even at batch 1):

    1. each tile sums its bound values (v cos θ, v sin θ) over its steps → [B, N, 2, C];
    2. the sums of the tiles before each one (plus M_0) are a float64 cumsum over the N tiles
       in PyTorch (tiny), so a tile's running sum is exact to one float32 rounding of its entry;
    3. each tile makes its running sums from that entry and writes the retrieval.

The backward runs the same two passes in reverse time on (∂L/∂A, ∂L/∂B).

With resets (RESET, M_t = [¬reset_t] M_{t-1} + v_t κ_t): pass 1 sums only the part of a tile
that reaches the next one, its steps after its last reset (in reverse time, those before its
first reset, a reset at its first step included); pass 2 carries the running sum through a tile
only when the tile holds no reset; pass 3 runs a sum that restarts at each reset (an associative
scan of (flag, value) pairs: the adds of each segment alone, where a cumsum minus its value at
the segment's start would cancel the earlier segments' sums) and adds the entry up to the tile's
first reset. In reverse time the gradient of step t + 1 reaches t unless t + 1 is a reset.

The phases θ, ψ' and their sines and cosines are formed from the content phases and the two
position tables inside the kernels and recomputed in the backward, never stored; v, φ and ψ are
read in their own dtype. Tile sizes are untimed guesses (no GPU was lent to the session that
wrote them), as is the reset path's speed (compiled for sm_90 without spills, never run on a
GPU).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from hololm.ops.triton_kernels import on_input_device

BLOCK_T = 64
BLOCK_C = 32
# compiled for sm_90 here (tests/ops/test_triton_compile.py): at 4 warps the backward kernel
# needs 255 registers and spills; at 8 warps no kernel spills
NUM_WARPS = 8


@triton.jit
def _tile(t_block, c_block, T, C, BT: tl.constexpr, BC: tl.constexpr):
    t = t_block * BT + tl.arange(0, BT)[:, None]  # [BT, 1]
    c = c_block * BC + tl.arange(0, BC)[None, :]  # [1, BC]
    return t, c, (t < T) & (c < C)


@triton.jit
def _position(blocks, inner, t, c, mask, C, L):
    """pω on a tile: the block's phase plus the in-block phase (two exact tables)."""
    return (tl.load(blocks + (t // L) * C + c, mask=mask, other=0.0)
            + tl.load(inner + (t % L) * C + c, mask=mask, other=0.0))


@triton.jit
def _in_range(angle):
    """NaN for |angle| >= 2^23 rad (and inf / NaN), where a float32 angle has no fractional
    part left, as the C kernel does: a flagged channel instead of a meaningless value."""
    return tl.where(tl.abs(angle) < 8388608.0, angle, float("nan"))


@triton.jit
def _key_angle(phi, blocks, inner, row, t, c, mask, C, L, POSITIONAL: tl.constexpr):
    """θ = φ + pω on a tile."""
    theta = tl.load(phi + row * C + c, mask=mask, other=0.0).to(tl.float32)
    if POSITIONAL:
        theta = theta + _position(blocks, inner, t, c, mask, C, L)
    return _in_range(theta)


@triton.jit
def _query_angle(psi, blocks, inner, shift, row, t, c, mask, C, L, POSITIONAL: tl.constexpr):
    """ψ' = ψ + pω − δω on a tile."""
    angle = tl.load(psi + row * C + c, mask=mask, other=0.0).to(tl.float32)
    if POSITIONAL:
        pos = _position(blocks, inner, t, c, mask, C, L)
        angle = angle + (pos - tl.load(shift + c, mask=c < C, other=0.0))
    return _in_range(angle)


@triton.jit
def _query(psi_, scale, t, T):
    s = tl.load(scale + t, mask=t < T, other=0.0)  # [BT, 1]
    return tl.cos(psi_) * s, tl.sin(psi_) * s


@triton.jit
def _segments(reset, b, t, T):
    """seg [BT, 1] int32: how many resets the tile holds up to each of its steps t."""
    r = tl.load(reset + b * T + t, mask=t < T, other=0).to(tl.int32)
    return tl.cumsum(r, 0)


@triton.jit
def _restart(f1, a1, b1, f2, a2, b2):
    """The combine of a running sum (a, b) that restarts: the later element's flag f2 drops
    what came before it; f: whether any flag was seen."""
    carry = f2 == 0
    return f1 | f2, tl.where(carry, a1 + a2, a2), tl.where(carry, b1 + b2, b2)


@triton.jit
def _restarting_sums(x_a, x_b, flags, BACKWARD: tl.constexpr):
    """Running sums of the tile's x_a, x_b [BT, BC] along its steps (from the last step back
    when BACKWARD), each starting again at a step whose flag ([BT, 1] int32) is set."""
    flags = flags + tl.zeros(x_a.shape, tl.int32)  # [BT, BC]: scanned with the sums
    _, x_a, x_b = tl.associative_scan((flags, x_a, x_b), 0, _restart, reverse=BACKWARD)
    return x_a, x_b


@triton.jit
def _forward_sums(v, phi, blocks, inner, reset, sums, T, C, L, N,
                  POSITIONAL: tl.constexpr, RESET: tl.constexpr, BT: tl.constexpr,
                  BC: tl.constexpr):
    n, c_block, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    t, c, mask = _tile(n, c_block, T, C, BT, BC)
    row = (b * T + t).to(tl.int64)  # B·T·C may pass 2^31 (B·T may not)
    theta = _key_angle(phi, blocks, inner, row, t, c, mask, C, L, POSITIONAL)
    value = tl.load(v + row * C + c, mask=mask, other=0.0).to(tl.float32)
    if RESET:  # only the steps after the tile's last reset reach the next tile
        seg = _segments(reset, b, t, T)  # [BT, 1]
        value = tl.where(seg == tl.max(seg, 0, keep_dims=True), value, 0.0)
    out = sums + ((b * N + n) * 2).to(tl.int64) * C + c
    tl.store(out, tl.sum(value * tl.cos(theta), 0)[None, :], mask=c < C)
    tl.store(out + C, tl.sum(value * tl.sin(theta), 0)[None, :], mask=c < C)


@triton.jit
def _forward(v, phi, psi, blocks, inner, shift, scale, reset, entry, parts, T, C, L, N,
             PART_STRIDE, CHANNEL_STRIDE,
             POSITIONAL: tl.constexpr, RESET: tl.constexpr, BT: tl.constexpr,
             BC: tl.constexpr):
    n, c_block, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    t, c, mask = _tile(n, c_block, T, C, BT, BC)
    row = (b * T + t).to(tl.int64)  # B·T·C may pass 2^31 (B·T may not)
    theta = _key_angle(phi, blocks, inner, row, t, c, mask, C, L, POSITIONAL)
    psi_ = _query_angle(psi, blocks, inner, shift, row, t, c, mask, C, L, POSITIONAL)
    value = tl.load(v + row * C + c, mask=mask, other=0.0).to(tl.float32)
    start = entry + ((b * N + n) * 2).to(tl.int64) * C + c
    if RESET:  # M_t drops M_{t-1} at a reset: the entry reaches steps before the first one
        r = tl.load(reset + b * T + t, mask=t < T, other=0).to(tl.int32)  # [BT, 1]
        mem_re, mem_im = _restarting_sums(value * tl.cos(theta), value * tl.sin(theta), r,
                                          False)
        enters = tl.cumsum(r, 0) == 0  # [BT, 1]: no reset in the tile up to t
        mem_re += tl.where(enters, tl.load(start, mask=c < C, other=0.0), 0.0)
        mem_im += tl.where(enters, tl.load(start + C, mask=c < C, other=0.0), 0.0)
    else:
        mem_re = tl.cumsum(value * tl.cos(theta), 0) + tl.load(start, mask=c < C, other=0.0)
        mem_im = tl.cumsum(value * tl.sin(theta), 0) + tl.load(start + C, mask=c < C, other=0.0)
    cos_q, sin_q = _query(psi_, scale, t, T)
    out = parts + row * 2 * C + c * CHANNEL_STRIDE
    tl.store(out, mem_re * cos_q + mem_im * sin_q, mask=mask)
    tl.store(out + PART_STRIDE, mem_im * cos_q - mem_re * sin_q, mask=mask)


@triton.jit
def _grad_mem(psi, blocks, inner, shift, scale, g_parts, row, t, c, mask, T, C, L,
              PART_STRIDE, CHANNEL_STRIDE, POSITIONAL: tl.constexpr):
    """∂L/∂(A_t, B_t) from this step's retrieval alone, and the loaded ∂L/∂(Re r, Im r)."""
    psi_ = _query_angle(psi, blocks, inner, shift, row, t, c, mask, C, L, POSITIONAL)
    cos_q, sin_q = _query(psi_, scale, t, T)
    grad = g_parts + row * 2 * C + c * CHANNEL_STRIDE
    g_re = tl.load(grad, mask=mask, other=0.0)
    g_im = tl.load(grad + PART_STRIDE, mask=mask, other=0.0)
    return g_re * cos_q - g_im * sin_q, g_re * sin_q + g_im * cos_q, g_re, g_im


@triton.jit
def _backward_sums(psi, blocks, inner, shift, scale, reset, g_parts, sums, T, C, L, N,
                   PART_STRIDE, CHANNEL_STRIDE,
                   POSITIONAL: tl.constexpr, RESET: tl.constexpr, BT: tl.constexpr,
                   BC: tl.constexpr):
    n, c_block, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    t, c, mask = _tile(n, c_block, T, C, BT, BC)
    row = (b * T + t).to(tl.int64)  # B·T·C may pass 2^31 (B·T may not)
    g_a, g_b, _, _ = _grad_mem(psi, blocks, inner, shift, scale, g_parts, row, t, c, mask, T,
                               C, L, PART_STRIDE, CHANNEL_STRIDE, POSITIONAL)
    if RESET:  # only the steps before the tile's first reset reach the previous tile
        before = _segments(reset, b, t, T) == 0  # [BT, 1]
        g_a, g_b = tl.where(before, g_a, 0.0), tl.where(before, g_b, 0.0)
    out = sums + ((b * N + n) * 2).to(tl.int64) * C + c
    tl.store(out, tl.sum(g_a, 0)[None, :], mask=c < C)
    tl.store(out + C, tl.sum(g_b, 0)[None, :], mask=c < C)


@triton.jit
def _backward(v, phi, psi, blocks, inner, shift, scale, reset, parts, g_parts, entry,
              d_v, d_phi, d_psi, T, C, L, N, PART_STRIDE, CHANNEL_STRIDE,
              POSITIONAL: tl.constexpr, RESET: tl.constexpr, BT: tl.constexpr,
              BC: tl.constexpr):
    n, c_block, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    t, c, mask = _tile(n, c_block, T, C, BT, BC)
    row = (b * T + t).to(tl.int64)  # B·T·C may pass 2^31 (B·T may not)
    g_a, g_b, g_re, g_im = _grad_mem(psi, blocks, inner, shift, scale, g_parts, row, t, c,
                                     mask, T, C, L, PART_STRIDE, CHANNEL_STRIDE, POSITIONAL)
    start = entry + ((b * N + n) * 2).to(tl.int64) * C + c
    if RESET:  # the gradient of step t + 1 reaches t unless t + 1 is a reset
        r = tl.load(reset + b * T + t + 1, mask=t + 1 < T, other=0).to(tl.int32)  # [BT, 1]
        g_a, g_b = _restarting_sums(g_a, g_b, r, True)
        enters = tl.cumsum(r, 0, reverse=True) == 0  # [BT, 1]: no reset in (t, tile end + 1]
        g_a += tl.where(enters, tl.load(start, mask=c < C, other=0.0), 0.0)
        g_b += tl.where(enters, tl.load(start + C, mask=c < C, other=0.0), 0.0)
    else:
        g_a = tl.cumsum(g_a, 0, reverse=True) + tl.load(start, mask=c < C, other=0.0)
        g_b = tl.cumsum(g_b, 0, reverse=True) + tl.load(start + C, mask=c < C, other=0.0)
    theta = _key_angle(phi, blocks, inner, row, t, c, mask, C, L, POSITIONAL)
    cos_k, sin_k = tl.cos(theta), tl.sin(theta)
    value = tl.load(v + row * C + c, mask=mask, other=0.0).to(tl.float32)
    out = parts + row * 2 * C + c * CHANNEL_STRIDE
    re = tl.load(out, mask=mask, other=0.0)
    im = tl.load(out + PART_STRIDE, mask=mask, other=0.0)
    tl.store(d_v + row * C + c, g_a * cos_k + g_b * sin_k, mask=mask)
    tl.store(d_phi + row * C + c, value * (g_b * cos_k - g_a * sin_k), mask=mask)
    tl.store(d_psi + row * C + c, g_re * im - g_im * re, mask=mask)


def _meta(positional: bool, resets: bool) -> dict:
    """The compile-time arguments of every launch."""
    return {"POSITIONAL": positional, "RESET": resets, "BT": BLOCK_T, "BC": BLOCK_C,
            "num_warps": NUM_WARPS}


def _layout(interleaved: bool, C: int) -> tuple[int, int]:
    """(distance from Re to Im, distance between channels) in the parts buffer."""
    return (1, 2) if interleaved else (C, 1)


class PhasorMemoryTriton(torch.autograd.Function):
    """Same contract as `_PhasorMemoryNative` (cpu_form.py) without the library:
    v, φ, ψ [B, T, H, D] (any float dtype), shift [H, D] (None = 0), m0 [B, 2, H, D] (None =
    0), tables (blocks [n, H, D], inner [L, H, D]; None = content-only), scale [T], reset
    [B, T] bool (None: no reset), interleaved → parts [B, T, 2, H, D] or [B, T, H, D, 2] and
    the final memory [B, 2, H, D], float32."""

    @staticmethod
    @on_input_device
    def forward(ctx, v, phi, psi, shift, m0, tables, scale, reset, interleaved):
        B, T, H, D = v.shape
        C, N = H * D, triton.cdiv(T, BLOCK_T)
        v, phi, psi = v.contiguous(), phi.contiguous(), psi.contiguous()
        scale = scale.float().contiguous()
        positional = tables is not None
        blocks, inner = (x.float().contiguous() for x in tables) if positional else (v, v)
        shift = v.new_zeros(C, dtype=torch.float32) if shift is None else shift.float()
        shift = shift.contiguous()
        L = inner.shape[0] if positional else 1
        grid = (N, triton.cdiv(C, BLOCK_C), B)  # N first: the only axis allowed past 65535
        carry = None if reset is None else _tiles_without_reset(reset, N)
        # without resets a placeholder pointer, which RESET=False kernels never read
        reset = v if reset is None else reset.to(torch.int8).contiguous()  # [B, T]
        sums = v.new_empty(B, N, 2, C, dtype=torch.float32)
        meta = _meta(positional, carry is not None)
        _forward_sums[grid](v, phi, blocks, inner, reset, sums, T, C, L, N, **meta)
        entry, last = _running_entries(sums, m0, carry, reverse=False)
        parts = v.new_empty((B, T, H, D, 2) if interleaved else (B, T, 2, H, D),
                            dtype=torch.float32)
        _forward[grid](v, phi, psi, blocks, inner, shift, scale, reset, entry, parts, T, C, L,
                       N, *_layout(interleaved, C), **meta)
        ctx.save_for_backward(v, phi, psi, shift, scale, reset, parts, blocks, inner, carry)
        ctx.positional, ctx.interleaved, ctx.L = positional, interleaved, L
        return parts, last.view(B, 2, H, D)

    @staticmethod
    @once_differentiable
    @on_input_device
    def backward(ctx, g_parts, g_last):
        v, phi, psi, shift, scale, reset, parts, blocks, inner, carry = ctx.saved_tensors
        B, T, H, D = v.shape
        C, N = H * D, triton.cdiv(T, BLOCK_T)
        g_parts = (torch.zeros_like(parts) if g_parts is None
                   else g_parts.float().contiguous())
        grid = (N, triton.cdiv(C, BLOCK_C), B)  # N first: the only axis allowed past 65535
        layout = _layout(ctx.interleaved, C)
        sums = parts.new_empty(B, N, 2, C)
        meta = _meta(ctx.positional, carry is not None)
        _backward_sums[grid](psi, blocks, inner, shift, scale, reset, g_parts, sums, T, C, ctx.L,
                             N, *layout, **meta)
        g_last = None if g_last is None else g_last.reshape(B, 2, C)
        entry, d_m0 = _running_entries(sums, g_last, carry, reverse=True)
        d_v, d_phi, d_psi = (parts.new_empty(B, T, H, D) for _ in range(3))
        _backward[grid](v, phi, psi, blocks, inner, shift, scale, reset, parts, g_parts, entry,
                        d_v, d_phi, d_psi, T, C, ctx.L, N, *layout, **meta)
        d_shift = -d_psi.sum((0, 1)) if ctx.needs_input_grad[3] else None  # ψ' = ψ + pω − δω
        d_m0 = d_m0.view(B, 2, H, D) if ctx.needs_input_grad[4] else None
        return d_v, d_phi, d_psi, d_shift, d_m0, None, None, None, None


def _tiles_without_reset(reset: torch.Tensor, N: int) -> torch.Tensor:
    """reset [B, T] bool → [B, N] bool: which tiles of BLOCK_T steps hold no reset."""
    B, T = reset.shape
    padded = reset.new_zeros(B, N * BLOCK_T)
    padded[:, :T] = reset
    return ~padded.view(B, N, BLOCK_T).any(-1)


def _running_entries(sums: torch.Tensor, start: torch.Tensor | None,
                     carry: torch.Tensor | None, reverse: bool
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per tile, the running sum entering it: `start` plus the sums of the tiles before it
    (after it when `reverse`), in float64; and the running sum past the last tile (the first
    when `reverse`). With resets, `carry` [B, N] bool marks the tiles the running sum passes
    through (no reset inside), and a tile's sum is its open part only: the entry is then the
    sums from the nearest tile without carry on, `start` only where there is none. sums
    [B, N, 2, C], start [B, 2, C] or None → ([B, N, 2, C] float32, [B, 2, C] float32)."""
    wide = sums.double()
    if reverse:
        wide, carry = wide.flip(1), None if carry is None else carry.flip(1)
    B, N = wide.shape[:2]
    total = wide.cumsum(1)
    entries = torch.cat((torch.zeros_like(total[:, :1]), total), dim=1)  # [B, N + 1]: before n
    fresh = None  # [B, N + 1]: whether a tile before n dropped the running sum
    if carry is not None:
        # the last tile k < n with a reset; its open part and the tiles after it add up to
        # the entry of n: Σ_{j < n} − Σ_{j < k}, whose cancellation costs float64 roundings
        # only, far below the float32 result's
        index = torch.arange(N, device=carry.device).expand(B, N)
        last = torch.where(carry, -1, index).cummax(1).values
        last = torch.cat((last.new_full((B, 1), -1), last), dim=1)  # [B, N + 1]
        fresh = last >= 0
        base = entries.gather(1, last.clamp(min=0)[:, :, None, None].expand_as(entries))
        entries = entries - torch.where(fresh[:, :, None, None], base, 0.0)
    if start is not None:
        start = start.reshape(B, 1, *wide.shape[2:]).double()
        entries = entries + (start if fresh is None
                             else torch.where(fresh[:, :, None, None], 0.0, start))
    entry = entries[:, :N]
    if reverse:
        entry = entry.flip(1)
    return entry.float(), entries[:, N].float()
