"""Inclusive prefix sums along one axis, computed block by block.

On CPU `torch.cumsum` along a long, non-innermost axis walks each column with a large stride
and becomes cache-miss bound, while a matmul streams. Split the axis of length T into
n = ceil(T / L) blocks of L (zero padded at the tail):

    y[k, j] = sum_{i <= j} x[k, i]                     within-block sums:  tril(ones[L, L]) @ x_k
    c[k]    = sum_{m < k} y[m, L - 1]                  carry: exclusive prefix sum of block totals
    cumsum(x)[k*L + j] = y[k, j] + c[k]

The carry axis is L times shorter and is summed by `cumsum` again (blocked when still long).
When a gradient is recorded, everything is made of matmul / pad / add, so autograd gives the
exact gradient (a reverse cumsum) for free; when none is (inference, or inside an op with its
own backward), the within-block sums are L − 1 in-place adds of cache-sized slices instead,
which skip the matmul's FLOPs. Half types (float16 / bfloat16) are summed in float32 and cast
back: the result always has the input's dtype, as with `torch.cumsum`.

`cumsum(x, dim)` is the dispatcher the other ops call: blocked where it measured faster (CPU,
floating dtypes, long axes with many columns after them), `torch.cumsum` otherwise.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from hololm.ops._validate import require_positive_int, require_tensor

# Where blocked_cumsum beats torch.cumsum on CPU (measured; see `cumsum`).
BLOCKED_MIN_COLUMNS = 64
BLOCKED_MIN_SLAB = 2**20
BLOCKED_MIN_SLAB_HALF = 2**24


def _require_dim(x: torch.Tensor, dim) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"dim must be an int, got {type(dim).__name__}")
    if x.dim() == 0 or not -x.dim() <= dim < x.dim():
        raise ValueError(f"dim={dim} out of range for a tensor of shape {tuple(x.shape)}")
    return dim % x.dim()


def _running_sums(xs: torch.Tensor, reverse: bool, fresh: bool) -> torch.Tensor:
    """Within-block sums of xs [pre, n, L, post] by L − 1 in-place adds of [pre, n, post]
    slices (each slice L times smaller than xs, so the adds run in cache): no matmul FLOPs,
    ~1.5x faster than the triangular matmul on CPU. Not differentiable (in-place), so
    `blocked_cumsum` takes it only when no gradient is recorded; `fresh`: xs may be
    overwritten."""
    y = xs if fresh else xs.clone()
    steps = range(y.shape[2] - 2, -1, -1) if reverse else range(1, y.shape[2])
    for j in steps:
        y[:, :, j].add_(y[:, :, j + 1 if reverse else j - 1])
    return y


def blocked_cumsum(x: torch.Tensor, dim: int = 1, block_size: int | None = None, *,
                   reverse: bool = False, overwrite: bool = False) -> torch.Tensor:
    """Inclusive prefix sum of a real floating tensor `x` along `dim` (same shape and dtype);
    `reverse`: the suffix sum y_j = Σ_{i >= j} x_i (upper-triangular blocks, carry from the end),
    without the two flips of `cumsum(x.flip(dim)).flip(dim)`. `block_size` None: the measured
    best, 64 for the in-place running sums (no gradient recorded), 32 for the matmul.
    `overwrite`: the caller no longer needs `x`, so the running sums may work in its storage
    instead of a copy (a full pass saved; the result may then share x's memory)."""
    require_tensor("x", x)
    dim = _require_dim(x, dim)
    shape, length = x.shape, x.shape[dim]
    pre, post = math.prod(shape[:dim]), math.prod(shape[dim + 1:])
    running = post > 1 and not (torch.is_grad_enabled() and x.requires_grad)
    block = require_positive_int("block_size", (64 if running else 32) if block_size is None
                                 else block_size)
    if length == 0:
        return x.clone()
    work = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    n = -(-length // block)
    xs = x.to(work).reshape(pre, length, post)
    if n * block > length:
        xs = F.pad(xs, (0, 0, 0, n * block - length))
    if running:
        copied = xs.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()
        y = _running_sums(xs.view(pre, n, block, post), reverse, fresh=copied or overwrite)
    else:
        tril = torch.ones(block, block, dtype=work, device=x.device)
        tril = tril.triu() if reverse else tril.tril()  # row j sums i <= j (i >= j if reverse)
        # autocast would run the matmul in bf16/fp16 and lose the float32 accumulation
        with torch.autocast(x.device.type, enabled=False):
            if post == 1:
                # summing the innermost axis: one [pre*n, L] @ [L, L] GEMM, not many mat-vecs
                y = (xs.reshape(pre * n, block) @ tril.T).view(pre, n, block, 1)
            else:
                y = tril @ xs.view(pre, n, block, post)  # [pre, n, L, post]
    # block totals [pre, n, post] (copies, as y is updated in place below), exclusive carries;
    # the zero padding sits at the end, where it adds nothing to a suffix sum either
    if reverse:
        totals = y[:, :, 0].clone()
        carry = F.pad(cumsum(totals[:, 1:], dim=1, reverse=True), (0, 0, 0, 1))
    else:
        totals = y[:, :, -1].clone()
        carry = F.pad(cumsum(totals[:, :-1], dim=1), (0, 0, 1, 0))
    # in place: the matmul's backward does not need its output, and a fresh buffer costs a pass
    y = y.add_(carry.unsqueeze(2)).view(pre, n * block, post)[:, :length]
    return y.reshape(shape).to(x.dtype)


def _prefers_blocked(x: torch.Tensor, dim: int) -> bool:
    """The measured CPU rule (see `cumsum`)."""
    if x.device.type != "cpu" or not x.is_floating_point():
        return False
    columns = math.prod(x.shape[dim + 1:])
    half = x.dtype in (torch.float16, torch.bfloat16)
    return columns >= BLOCKED_MIN_COLUMNS and x.shape[dim] * columns >= (
        BLOCKED_MIN_SLAB_HALF if half else BLOCKED_MIN_SLAB)


def cumsum(x: torch.Tensor, dim: int = 1, *, reverse: bool = False,
           overwrite: bool = False) -> torch.Tensor:
    """Inclusive prefix sum along `dim` (`reverse`: suffix sum), by `blocked_cumsum` where it is
    faster, else `torch.cumsum` (same result up to rounding, same dtype).

    Rule measured on a 2-core CPU with torch 2.13: `torch.cumsum` along a non-innermost axis
    reads with a stride of `columns` (the product of the dims after `dim`) and slows down per
    element as the axis and the column count grow, while the blocked form is a matmul. Blocked
    wins (fp32, fwd and fwd+bwd alike) once columns >= 64 and T * columns >= 2^20: ~1.2x at
    [T=4096, 256 columns], 3.6x at [65536, 256], 3x at [4096, 1024]; it loses below that, on the
    innermost axis and with 16 columns even at T = 65536. Half types pay two conversion passes
    and win only from 2^24. Integer/complex dtypes and non-CPU devices (a GPU has a native scan)
    always use `torch.cumsum`. `overwrite`: x may be summed in its own storage (see
    `blocked_cumsum`)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    dim = _require_dim(x, dim)
    if _prefers_blocked(x, dim):
        return blocked_cumsum(x, dim, reverse=reverse, overwrite=overwrite)
    return torch.cumsum(x.flip(dim), dim).flip(dim) if reverse else torch.cumsum(x, dim)
