"""The tiny training run the reliability attacks start from: a 2-layer `long` model on the
stdlib corpus, byte tokens, a few steps."""

from __future__ import annotations

from pathlib import Path

from hololm.train.config import TrainConfig

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}


def run_values(out: Path, cache_dir: str, **changes) -> dict:
    return {"model_type": "long", "model_size": "tiny", "model_overrides": TINY, "seq_len": 32,
            "batch_size": 4, "max_steps": 6, "lr": 3e-3, "warmup_steps": 2, "eval_steps": 100,
            "eval_batches": 1, "save_steps": 2, "keep_checkpoints": 1, "log_every": 1,
            "sample_tokens": 0, "dataset": "stdlib", "tokenizer": "byte",
            "max_train_tokens": 50_000, "max_eval_tokens": 5_000, "cache_dir": cache_dir,
            "output_dir": str(out), "precision": "fp32", **changes}


def run_config(out: Path, cache_dir: str, **changes) -> TrainConfig:
    return TrainConfig(**run_values(out, cache_dir, **changes))
