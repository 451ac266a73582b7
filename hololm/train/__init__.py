"""Training: `TrainConfig` (flags or a JSON / YAML file) and `train(cfg)`, with atomic, exactly
resumable checkpoints, a warmup + cosine schedule, and CSV / TensorBoard / PNG logs."""

from hololm.train.checkpoint import (
    Checkpoint,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from hololm.train.config import TrainConfig
from hololm.train.schedule import build_scheduler, warmup_cosine
from hololm.train.trainer import train

__all__ = ["Checkpoint", "TrainConfig", "build_scheduler", "latest_checkpoint",
           "list_checkpoints", "load_checkpoint", "save_checkpoint", "train", "warmup_cosine"]
