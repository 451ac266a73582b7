"""Divergence that is not NaN: a loss spike with no recovery, or a collapse to uniform output
(a loss of ln(vocabulary), the model predicting nothing), which a non-finite check never sees.

The watch follows the median of the last `WINDOW` training losses, so that one bad batch is
no alarm and a spike of 1e6 does not take hundreds of steps to wash out of an average. The
loss is unhealthy when that median sits more than `margin(best)` above the best median so far,
or, once warmup is over, within `UNIFORM_SLACK` of the uniform loss. After `patience`
unhealthy steps in a row the run is stopped."""

from __future__ import annotations

import math
import statistics
from collections import deque

WINDOW = 20
UNIFORM_SLACK = 0.02  # nats below ln(vocabulary) that still count as predicting nothing


def margin(best: float) -> float:
    """How far above its best a healthy loss may sit: 0.5 nats, or a quarter of the best."""
    return max(0.5, 0.25 * best)


class LossWatch:
    """Feed it every step's training loss; `update` returns a one-line verdict once the loss
    has been unhealthy for `patience` steps in a row (None otherwise). `patience` 0: never."""

    def __init__(self, patience: int, uniform_loss: float, warmup_steps: int):
        self.patience, self.uniform, self.warmup = patience, uniform_loss, warmup_steps
        self.recent: deque[float] = deque(maxlen=WINDOW)
        self.best, self.best_step = math.inf, 0
        self.unhealthy_since: int | None = None
        self.healthy = True  # whether the last step's loss (and the median) looked healthy

    def update(self, step: int, loss: float) -> str | None:
        if not math.isfinite(loss):  # skipped steps: the non-finite check handles them
            return None
        self.recent.append(loss)
        if len(self.recent) < WINDOW:
            self.healthy = loss <= self.best + margin(self.best) if self.best < math.inf else True
            return None
        median = statistics.median(self.recent)
        if median < self.best:
            self.best, self.best_step = median, step
        spiked = median > self.best + margin(self.best)
        uniform = step > self.warmup and median >= self.uniform - UNIFORM_SLACK
        self.healthy = not (spiked or uniform) and loss <= self.best + margin(self.best)
        if not (spiked or uniform):
            self.unhealthy_since = None
            return None
        if self.unhealthy_since is None:
            self.unhealthy_since = step
        if self.patience == 0 or step - self.unhealthy_since + 1 < self.patience:
            return None
        if spiked:
            return (f"the training loss has stayed above {self.best + margin(self.best):.3f} "
                    f"for {self.patience} steps (median of the last {WINDOW}: {median:.4g}; "
                    f"best {self.best:.4f} at step {self.best_step})")
        return (f"the training loss has stayed at the uniform-output level ln(vocabulary) = "
                f"{self.uniform:.3f} for {self.patience} steps after warmup (median of the last "
                f"{WINDOW}: {median:.4f}): the model is not learning")
