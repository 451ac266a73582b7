"""Packed documents: position_ids restarting at 0 mark where a document begins inside a row, and
every family then gives each document the logits and gradients it gets alone."""

import pytest
import torch

from hololm.models.cache import cache_of
from tests.models.helpers import VOCAB, ids

# row 0 packs three documents (one of a single token), row 1 holds one
LENGTHS = ((7, 1, 11, 5), (24,))


def position_ids(lengths=LENGTHS) -> torch.Tensor:
    return torch.tensor([[i for n in row for i in range(n)] for row in lengths])


def documents_alone(model, x: torch.Tensor, lengths=LENGTHS) -> list[tuple[int, int, torch.Tensor]]:
    """(row, start, logits [1, n, V]) of every document run by itself."""
    out = []
    for row, parts in enumerate(lengths):
        start = 0
        for n in parts:
            out.append((row, start, model(x[row:row + 1, start:start + n], use_cache=False).logits))
            start += n
    return out


def test_a_packed_row_equals_its_documents_one_by_one(model):
    """Outputs and the gradients of every weight, fp32 tight."""
    x = ids(2, 24, seed=1)
    weights = torch.randn(2, 24, VOCAB, generator=torch.Generator().manual_seed(2))
    params = [p for p in model.parameters() if p.requires_grad]

    logits = model(x, position_ids=position_ids(), use_cache=False).logits
    packed_grads = torch.autograd.grad((logits * weights).sum(), params, allow_unused=True)

    expected = torch.empty_like(logits)
    total = 0
    for row, start, part in documents_alone(model, x):
        expected[row:row + 1, start:start + part.shape[1]] = part.detach()
        total = total + (part * weights[row:row + 1, start:start + part.shape[1]]).sum()
    alone_grads = torch.autograd.grad(total, params, allow_unused=True)

    torch.testing.assert_close(logits, expected, atol=2e-5, rtol=2e-5)
    for p, got, want in zip(params, packed_grads, alone_grads, strict=True):
        got = torch.zeros_like(p) if got is None else got
        want = torch.zeros_like(p) if want is None else want
        torch.testing.assert_close(got, want, atol=2e-5, rtol=2e-4)


def test_packed_prefill_then_decode_equals_the_full_packed_forward(model):
    """Through the cache in chunks that cut documents, then token by token with the positions
    generate would pass."""
    x = ids(2, 24, seed=3)
    pos = position_ids()
    full = model(x, position_ids=pos, use_cache=False).logits
    cache, steps = None, []
    for start, stop in ((0, 5), (5, 16)):
        out = model(x[:, start:stop], position_ids=pos[:, start:stop], past_key_values=cache,
                    use_cache=True)
        cache = cache_of(out)
        steps.append(out.logits)
    for t in range(16, 24):
        out = model(x[:, t:t + 1], position_ids=pos[:, t:t + 1], past_key_values=cache,
                    use_cache=True)
        cache = cache_of(out)
        steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=2e-5, rtol=2e-5)


def test_plain_positions_change_nothing(model):
    x = ids(2, 12, seed=4)
    plain = model(x, use_cache=False).logits
    given = model(x, position_ids=torch.arange(12)[None], use_cache=False).logits
    torch.testing.assert_close(given, plain, atol=0, rtol=0)


def test_bad_position_ids_are_refused_by_name(model):
    x = ids(2, 6)
    with pytest.raises(TypeError, match="position_ids must be an integer tensor"):
        model(x, position_ids=torch.zeros(2, 6))
    with pytest.raises(ValueError, match=r"position_ids must have shape \(2, 6\) or \(1, 6\)"):
        model(x, position_ids=torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="position_ids must be >= 0"):
        model(x, position_ids=torch.tensor([[0, 1, 2, -1, 0, 1]]))
    with pytest.raises(ValueError, match="row 1 goes from 1 to 3 at token 2"):
        model(x, position_ids=torch.tensor([[0, 1, 2, 0, 1, 2], [0, 1, 3, 4, 5, 6]]))
    cache = cache_of(model(x, position_ids=torch.tensor([[0, 1, 2, 0, 1, 2]]), use_cache=True))
    with pytest.raises(ValueError, match="pass position_ids with every later call"):
        model(x[:, :1], past_key_values=cache, use_cache=True)
