"""Learning-rate schedule: linear warmup, then cosine decay to a floor (10 % of the peak by
default), as a `torch.optim.lr_scheduler.LambdaLR` whose state_dict round-trips for resuming."""

from __future__ import annotations

import math
from collections.abc import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(warmup_steps: int, total_steps: int, min_ratio: float = 0.1
                  ) -> Callable[[int], float]:
    """Factor of the peak lr at (0-based) step `step`: (step + 1) / warmup_steps during warmup,
    so the first update already moves, then a half cosine from 1 down to `min_ratio` at
    `total_steps`, held there afterwards."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    # a plain function (not a partial or callable object): LambdaLR.state_dict leaves it out
    return factor


def build_scheduler(optimizer: Optimizer, warmup_steps: int, total_steps: int,
                    min_ratio: float = 0.1) -> LambdaLR:
    """LambdaLR applying `warmup_cosine` to every param group (Muon's and AdamW's alike)."""
    return LambdaLR(optimizer, warmup_cosine(warmup_steps, total_steps, min_ratio))
