"""A model's vocabulary may be padded beyond its tokenizer's (to a multiple of 64, for matmul
speed). The padded rows are never trained on and decode to no text, so generation must never
produce them: this is where a model learns how many of its rows are real."""

from __future__ import annotations

from transformers import PreTrainedModel


def restrict_generation_to(model: PreTrainedModel, n_tokens: int) -> None:
    """Rows n_tokens … vocab_size − 1 are suppressed in generation: `generate()` (greedy,
    sampling, beam) and hololm's `generate_text` read `generation_config.suppress_tokens`,
    which `save_pretrained` stores with the model. ValueError when the tokenizer is larger than
    the vocabulary (its last ids would have no embedding)."""
    vocab = model.config.vocab_size
    if n_tokens > vocab:
        raise ValueError(f"the tokenizer has {n_tokens} tokens but the model's vocabulary only "
                         f"{vocab}: ids {vocab}..{n_tokens - 1} have no embedding")
    model.generation_config.suppress_tokens = list(range(n_tokens, vocab)) or None
