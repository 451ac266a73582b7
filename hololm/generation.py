"""Text generation from a trained model, streamed piece by piece as tokens are produced.

The decoding loop is explicit: one forward over the prompt (prefill), then one token at a time
through the model's cache. For pure holographic models that cache is a
`HoloCache` of fixed size, so memory stays constant however long the generation runs (the
returned `Generation.cache_bytes` shows it); attention layers keep a growing KV cache. Logits
are shaped by `transformers`' own processors (repetition penalty, temperature, top-k, top-p,
in `generate()`'s order), so greedy decoding (`temperature=0`) equals `model.generate(...,
do_sample=False)` token for token."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    RepetitionPenaltyLogitsProcessor,
    SuppressTokensLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from hololm.eval.checkpoints import load_model_and_tokenizer
from hololm.models.cache import HoloCache, cache_argument, cache_of

Stream = Callable[[str], object] | bool | None


@dataclass
class Generation:
    """The new text (prompt excluded, EOS dropped), its token ids, and how it was produced."""

    text: str
    token_ids: list[int]
    prompt_tokens: int
    seconds: float
    cache_bytes: int | None  # HoloCache size after the last step; None for other caches

    @property
    def tokens_per_second(self) -> float:
        return len(self.token_ids) / self.seconds if self.seconds > 0 else float("inf")


class IncrementalDecoder:
    """Turns token ids into text pieces whose concatenation is the decoded text: each step
    decodes only since the last emitted piece, and holds back text ending in U+FFFD (a
    multi-byte character cut between tokens)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = 0  # ids[prefix:read] decode to text already emitted (context for merges)
        self.read = 0

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        done = self._decode(self.ids[self.prefix:self.read])
        text = self._decode(self.ids[self.prefix:])
        if len(text) <= len(done) or text.endswith("\ufffd"):
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        return text[len(done):]

    def flush(self) -> str:
        """The text not yet emitted (an incomplete character at the very end included)."""
        done = self._decode(self.ids[self.prefix:self.read])
        rest = self._decode(self.ids[self.prefix:])[len(done):]
        self.prefix = self.read = len(self.ids)
        return rest


def validate_sampling(max_new_tokens: int, temperature: float, top_k: int, top_p: float,
                      repetition_penalty: float) -> None:
    """ValueError naming the first argument out of range."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) \
            or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    if not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be an int >= 0 (0 = no limit), got {top_k!r}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    if not math.isfinite(repetition_penalty) or repetition_penalty <= 0:
        raise ValueError(f"repetition_penalty must be > 0 (1 = none), got {repetition_penalty!r}")


def logits_processors(temperature: float, top_k: int, top_p: float,
                      repetition_penalty: float, suppress_tokens: list[int] | None = None,
                      device: torch.device | str = "cpu") -> LogitsProcessorList:
    """The processors `generate()` would build, in its order; the warpers only when sampling.
    `suppress_tokens` (the model's generation config: padded vocabulary rows) are never
    produced."""
    processors = LogitsProcessorList()
    if suppress_tokens:
        processors.append(SuppressTokensLogitsProcessor(suppress_tokens, device=device))
    if repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(repetition_penalty))
    if temperature > 0:
        if temperature != 1.0:
            processors.append(TemperatureLogitsWarper(temperature))
        if top_k > 0:
            processors.append(TopKLogitsWarper(top_k))
        if top_p < 1.0:
            processors.append(TopPLogitsWarper(top_p))
    return processors


def _step(model: PreTrainedModel, input_ids: torch.Tensor, argument: str,
          cache: object | None) -> tuple[torch.Tensor, object]:
    """Next-token logits [1, V] (float32) and the updated cache."""
    kwargs = {argument: cache} if cache is not None else {}
    out = model(input_ids=input_ids, use_cache=True, **kwargs)
    return out.logits[:, -1].float(), cache_of(out)


def _emitter(stream: Stream) -> Callable[[str], object] | None:
    if stream is True:
        def emit(piece: str) -> None:
            sys.stdout.write(piece)
            sys.stdout.flush()
        return emit
    return stream or None


@torch.no_grad()
def generate_text(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str, *,
                  max_new_tokens: int = 200, temperature: float = 0.8, top_k: int = 50,
                  top_p: float = 0.95, repetition_penalty: float = 1.0, seed: int | None = None,
                  stream: Stream = None, stop_at_eos: bool = True) -> Generation:
    """Continue `prompt` (an empty prompt starts from the BOS, else EOS, token).

    temperature 0 decodes greedily (top_k / top_p then unused); `seed` makes sampling
    reproducible without touching the global RNG; `stream` is a callback receiving each text
    piece as it is decoded, or True to print them to stdout. Generation stops after
    `max_new_tokens` or at the EOS token (unless `stop_at_eos=False`)."""
    validate_sampling(max_new_tokens, temperature, top_k, top_p, repetition_penalty)
    emit = _emitter(stream)
    device = next(model.parameters()).device
    ids = tokenizer(prompt)["input_ids"] if prompt else []
    if not ids:
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None \
            else tokenizer.eos_token_id
        if start is None:
            raise ValueError("prompt is empty and the tokenizer has no BOS or EOS token")
        ids = [start]
    # the ids so far, for the repetition penalty (the model itself only needs its cache);
    # allocated once so that each step costs the same however long the text grows
    sequence = torch.empty(1, len(ids) + max_new_tokens, dtype=torch.long, device=device)
    sequence[0, :len(ids)] = torch.tensor(ids)
    processors = logits_processors(temperature, top_k, top_p, repetition_penalty,
                                   model.generation_config.suppress_tokens, device)
    generator = None if seed is None else torch.Generator(device=device).manual_seed(seed)
    decoder, eos, argument = IncrementalDecoder(tokenizer), tokenizer.eos_token_id, \
        cache_argument(model)

    begin = time.perf_counter()
    logits, cache = _step(model, sequence[:, :len(ids)], argument, None)  # prefill
    new_ids: list[int] = []
    for i in range(max_new_tokens):
        scores = processors(sequence[:, :len(ids) + i], logits)
        if temperature > 0:
            token = torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=generator)
        else:
            token = scores.argmax(dim=-1, keepdim=True)
        if stop_at_eos and int(token) == eos:
            break
        new_ids.append(int(token))
        sequence[:, len(ids) + i] = token[:, 0]
        if emit and (piece := decoder.push(int(token))):
            emit(piece)
        if i + 1 < max_new_tokens:
            logits, cache = _step(model, token, argument, cache)
    if emit and (piece := decoder.flush()):
        emit(piece)
    seconds = time.perf_counter() - begin
    return Generation(text=tokenizer.decode(new_ids, skip_special_tokens=True), token_ids=new_ids,
                      prompt_tokens=len(ids), seconds=seconds,
                      cache_bytes=cache.nbytes() if isinstance(cache, HoloCache) else None)


def load_for_generation(checkpoint: str | Path, device: str | torch.device = "cpu",
                        dtype: torch.dtype | None = None
                        ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model (eval mode, on `device`) and tokenizer from a step directory or a checkpoint
    directory (its latest step); CheckpointError when missing or corrupt."""
    return load_model_and_tokenizer(checkpoint, device, dtype)
