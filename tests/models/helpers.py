"""Shared by the model tests: token ids, prefill-then-decode through the cache, and the bad-input
attacks every causal LM must refuse."""

import pytest
import torch

from hololm.models.cache import cache_of

VOCAB = 61


def ids(B: int, T: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (B, T), generator=torch.Generator().manual_seed(seed))


def prefill_then_decode(model, x: torch.Tensor, prompt: int, chunk: int) -> torch.Tensor:
    """x[:, :prompt] through the cache `chunk` tokens at a time, then the rest one token at a
    time: the logits of the decoded tokens [B, T − prompt, V]."""
    cache = None
    for start in range(0, prompt, chunk):
        cache = cache_of(model(x[:, start:min(start + chunk, prompt)], past_key_values=cache,
                               use_cache=True))
    steps = []
    for t in range(prompt, x.shape[1]):
        out = model(x[:, t:t + 1], past_key_values=cache, use_cache=True)
        cache = cache_of(out)
        steps.append(out.logits)
    return torch.cat(steps, 1)


def assert_refuses_bad_inputs(model) -> None:
    """Out-of-range, negative, float, 3-D and empty ids, non-tensors, masks with holes, a cache of
    another batch size and a foreign cache each raise a typed error naming the problem."""
    with pytest.raises(ValueError, match=rf"input_ids must lie in \[0, {VOCAB}\)"):
        model(torch.tensor([[1, 2, VOCAB]]))
    with pytest.raises(ValueError, match=rf"\[0, {VOCAB}\)"):
        model(torch.tensor([[1, -1, 3]]))
    with pytest.raises(TypeError, match="integer tensor"):
        model(torch.rand(1, 5))
    with pytest.raises(ValueError, match=r"\[batch, seq_len\]"):
        model(torch.zeros(1, 2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        model(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(TypeError, match="torch.Tensor"):
        model([[1, 2, 3]])
    with pytest.raises(ValueError, match="between real tokens"):
        model(ids(2, 5), attention_mask=torch.tensor([[1, 1, 1, 1, 1], [1, 0, 1, 1, 1]]))
    with pytest.raises(ValueError, match="only 0"):
        model(ids(1, 3), attention_mask=torch.tensor([[1, 2, 1]]))
    cache = cache_of(model(ids(2, 5), use_cache=True))
    with pytest.raises(ValueError, match="batch of 2"):
        model(ids(3, 1), past_key_values=cache)
    with pytest.raises(TypeError, match="HoloCache"):
        model(ids(1, 1), past_key_values=((torch.zeros(1),),))
