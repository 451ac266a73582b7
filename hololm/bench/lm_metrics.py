"""What `hololm bench lm` measures on a trained candidate: the test loss (with its standard
error) and bits per byte at multiples of the training length, and decoding tokens/s after a
long context.

hololm models read long windows chunk by chunk through their recurrent cache (exact, memory
bounded by the chunk); the HF baselines take the whole window: Llama's RoPE extrapolates as it
may, Mamba-2 has no positions, and GPT-2's absolute position table ends at the training length,
so its longer lengths are refused and the reason is reported instead of a number.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
from transformers import PreTrainedModel

from hololm.data.packing import TokenData
from hololm.errors import ConfigError
from hololm.eval.perplexity import evaluate_perplexity
from hololm.models.cache import cache_argument, cache_of
from hololm.models.modeling import HoloLMForCausalLM


def losses_by_length(model: PreTrainedModel, test: TokenData, seq_len: int,
                multiples: tuple[int, ...], *, tokens: int, batch_size: int,
                autocast: Callable[[], AbstractContextManager]) -> list[dict]:
    """One row per length seq_len · m: evaluate_perplexity's row (loss, loss_se, bits_per_byte,
    ...) plus "multiple" and "status" ("ok", or "refused: <why>")."""
    model.eval()
    rows = []
    for multiple in multiples:
        length = seq_len * multiple
        try:
            with autocast():
                row, = evaluate_perplexity(model, test.tokens, [length], batch_size=batch_size,
                                           tokens_per_length=tokens,
                                           bytes_per_token=test.bytes_per_token,
                                           chunk_size=seq_len)
            row["status"] = "ok"
        except ConfigError as err:  # GPT-2 past its position table
            row = {"context_length": length, "status": f"refused: {err}"}
        rows.append({"multiple": multiple, **row})
    return rows


@torch.no_grad()
def decode_tokens_per_s(model: PreTrainedModel, context: torch.Tensor, steps: int,
                        chunk: int, device: torch.device,
                        autocast: Callable[[], AbstractContextManager]) -> float:
    """Greedy decoding speed (tokens/s, batch 1) after prefilling `context` (1-D token ids):
    hololm models in chunks of `chunk` tokens through their cache, the HF baselines in one pass.
    ConfigError where the model has fewer positions than the context and the steps need."""
    limit = getattr(model.config, "n_positions", None)
    if limit is not None and context.numel() + steps > limit:
        raise ConfigError(f"{context.numel() + steps} tokens exceed the model's {limit} "
                          f"positions")
    model.eval()
    argument, cache, out = cache_argument(model), None, None
    ids = context.long().to(device)[None]
    if not isinstance(model, HoloLMForCausalLM):
        chunk = ids.shape[1]
    with autocast():
        for start in range(0, ids.shape[1], chunk):
            out = model(input_ids=ids[:, start:start + chunk], use_cache=True,
                        **({argument: cache} if cache is not None else {}))
            cache = cache_of(out)
        token = out.logits[:, -1:].argmax(-1)
        _sync(device)
        started = time.perf_counter()
        for _ in range(steps):
            out = model(input_ids=token, use_cache=True, **{argument: cache})
            cache, token = cache_of(out), out.logits[:, -1:].argmax(-1)
        _sync(device)
    return steps / (time.perf_counter() - started)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
