"""One training run of `hololm bench lm`: a candidate trained with the trainer's recipe (AdamW
with its betas and the default weight decay, warmup then cosine to 10 % of the peak, gradients
clipped at the default norm), on batches from the trainer's `BatchSampler`: with one seed, every
run reads the same batches in the same order, which the run proves with a hash of its stream.

Training wall-clock counts the steps only; the peak memory is that of one training step (the
second: the first allocates the optimizer state); the learning rate is judged on the loss over
fixed held-out windows of the training length.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel

from hololm.bench.measure import peak_memory_bytes
from hololm.data.packing import BatchSampler, StreamSampler, TokenData, eval_batches
from hololm.optim import build_optimizer
from hololm.train.carry import CarriedStates, check_carriable
from hololm.train.config import TrainConfig
from hololm.train.schedule import build_scheduler
from hololm.train.trainer import ADAMW_BETAS, LR_FLOOR, token_loss

DEFAULTS = TrainConfig()  # the trainer's weight decay and gradient clipping
MEMORY_STEP = 2


@dataclass
class Run:
    """What one (model, learning rate) run produced."""

    lr: float
    steps: int = 0
    train_s: float = 0.0
    peak_bytes: float = math.nan
    val_loss: float = math.inf  # inf: diverged
    diverged_at: int | None = None
    stream_hash: str = ""
    curve: list[dict] = field(default_factory=list)  # step, tokens, wall_s, loss


def train_run(model: PreTrainedModel, data: TokenData, select: TokenData, *, lr: float,
              seq_len: int, batch_size: int, steps: int, warmup_steps: int, seed: int,
              device: torch.device, autocast: Callable[[], AbstractContextManager],
              on_step: Callable[[int, float], None] = lambda step, loss: None,
              carry_state: bool = False) -> Run:
    """Train `model` in place for `steps` steps at peak learning rate `lr`; stop early where the
    loss or the gradient turns non-finite (the run then counts as diverged). `carry_state`: on
    contiguous streams from carried memories (ConfigError for a model with attention layers)."""
    model.to(device).train()
    optimizer = build_optimizer(model, "adamw", adamw_lr=lr, weight_decay=DEFAULTS.weight_decay,
                                adamw_betas=ADAMW_BETAS)
    scheduler = build_scheduler(optimizer, warmup_steps, steps, LR_FLOOR)
    if carry_state:
        check_carriable(model, type(model).__name__)
        # no document resets: the benchmark's fresh windows read across documents as well
        carried = CarriedStates(1, len(model.config.mixer_types), eos_token_id=None)
        sampler = StreamSampler(data, seq_len, batch_size, grad_accum_steps=1)
    else:
        sampler = BatchSampler(data, seq_len, batch_size, seed)
    stream = hashlib.blake2b(digest_size=16)
    run = Run(lr)
    clip = DEFAULTS.grad_clip if DEFAULTS.grad_clip > 0 else math.inf

    def step(batch: dict[str, torch.Tensor]) -> float:
        with autocast():
            loss_sum, count = (carried.loss(model, batch, 0, device) if carry_state
                               else token_loss(model, batch, device))
        loss = loss_sum / count.clamp(min=1)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        finite = bool(torch.isfinite(loss)) and bool(torch.isfinite(norm))
        if finite:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        return loss.item() if finite else math.nan

    for number in range(1, steps + 1):
        batch = next(sampler)
        stream.update(batch["input_ids"].numpy().tobytes())
        started = time.perf_counter()
        if number == MEMORY_STEP:
            losses: list[float] = []
            run.peak_bytes = peak_memory_bytes(
                lambda batch=batch, losses=losses: losses.append(step(batch)), device)
            loss = losses[0]
        else:
            loss = step(batch)
        run.train_s += time.perf_counter() - started
        run.steps = number
        if math.isnan(loss):
            run.diverged_at = number
            break
        run.curve.append({"step": number, "tokens": number * batch_size * seq_len,
                          "wall_s": run.train_s, "loss": loss})
        on_step(number, loss)
    run.stream_hash = stream.hexdigest()
    if run.diverged_at is None:
        run.val_loss = validation_loss(model, select, seq_len, batch_size, device, autocast)
    return run


@torch.no_grad()
def validation_loss(model: PreTrainedModel, data: TokenData, seq_len: int, batch_size: int,
                    device: torch.device, autocast: Callable[[], AbstractContextManager]
                    ) -> float:
    """Mean next-token loss over every non-overlapping `seq_len` window of `data` (inf where it
    is not finite: a learning rate that broke the model is never chosen)."""
    model.eval()
    total = count = 0.0
    for batch in eval_batches(data, seq_len, batch_size):
        with autocast():
            loss_sum, n = token_loss(model, batch, device)
        total += float(loss_sum)
        count += float(n)
    model.train()
    loss = total / count
    return loss if math.isfinite(loss) else math.inf


def choose(runs: list[Run]) -> Run | None:
    """The run of the lowest validation loss (ties: the smaller learning rate); None when every
    learning rate diverged."""
    finite = [r for r in runs if math.isfinite(r.val_loss)]
    return min(finite, key=lambda r: (r.val_loss, r.lr)) if finite else None
