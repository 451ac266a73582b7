"""Evaluation: held-out perplexity against context length (`hololm.eval.perplexity`), and
benchmarks through lm-evaluation-harness (`hololm.eval.lm_eval`, imported on its own so that
`python -m hololm.eval.lm_eval` runs it cleanly)."""

from hololm.eval.checkpoints import load_model_and_tokenizer, resolve_checkpoint
from hololm.eval.perplexity import (
    evaluate_checkpoint,
    evaluate_perplexity,
    plot_perplexity,
    write_csv,
)

__all__ = [
    "evaluate_checkpoint",
    "evaluate_perplexity",
    "load_model_and_tokenizer",
    "plot_perplexity",
    "resolve_checkpoint",
    "write_csv",
]
