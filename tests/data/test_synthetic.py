"""The synthetic tasks: every target is recomputed here from the inputs by a plain scan, so a
generator that mislabels, leaks the answer or breaks determinism fails."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hololm.data import synthetic
from hololm.data.synthetic import IGNORE


def _context_map(row: list[int], context_len: int) -> dict[int, int]:
    """key → latest value written in `k v k v …`."""
    return {row[i]: row[i + 1] for i in range(0, context_len, 2)}


@pytest.mark.parametrize("random_non_queries", [True, False, "no_keys"])
def test_mqar_targets_are_the_values_of_the_queried_keys(random_non_queries):
    vocab, kv, seq_len = 256, 8, 64
    data = synthetic.mqar(50, seq_len, kv, vocab_size=vocab, seed=3,
                          random_non_queries=random_non_queries)
    assert data.inputs.shape == data.targets.shape == (50, seq_len)
    for row, target in zip(data.inputs.tolist(), data.targets.tolist(), strict=True):
        keys, values = row[0:2 * kv:2], row[1:2 * kv:2]
        assert all(1 <= k < vocab // 2 for k in keys) and len(set(keys)) == kv
        assert all(vocab // 2 <= v < vocab for v in values) and len(set(values)) == kv
        table = _context_map(row, 2 * kv)
        scored = [t for t, y in enumerate(target) if y != IGNORE]
        assert len(scored) == kv and min(scored) >= 2 * kv
        assert sorted(row[t] for t in scored) == sorted(keys)  # each key queried once
        assert all(target[t] == table[row[t]] for t in scored)
        filler = [row[t] for t in range(2 * kv, seq_len) if t not in scored]
        if not random_non_queries:
            assert set(filler) == {0}
        if random_non_queries == "no_keys":
            assert not set(filler) & set(keys)


def test_mqar_random_filler_repeats_keys_unless_told_not_to():
    """The ceiling "no_keys" removes: with zoology's random filler in a 256-token vocabulary,
    some queries' keys also appear in the filler."""
    def clashes(filler) -> int:
        data = synthetic.mqar(200, 64, 4, vocab_size=256, seed=0, random_non_queries=filler)
        keys = data.inputs[:, 0:8:2]
        unscored = ~data.scored()
        unscored[:, :8] = False
        return ((data.inputs[:, :, None] == keys[:, None, :]).any(-1) & unscored).sum().item()

    assert clashes(True) > 50 and clashes("no_keys") == 0


def test_mqar_gaps_follow_the_power_law():
    """power_a = 0.01 puts most queries near the context; power_a = 1 is uniform."""
    def mean_offset(a: float) -> float:
        data = synthetic.mqar(400, 256, 8, vocab_size=512, seed=0, power_a=a)
        return data.scored().nonzero()[:, 1].float().mean().item() - 16

    near, uniform = mean_offset(0.01), mean_offset(1.0)
    assert near < 0.75 * uniform
    assert uniform == pytest.approx((256 - 16) / 2, rel=0.15)


def test_generators_are_deterministic_and_seeded():
    a = synthetic.mqar(8, 64, 4, vocab_size=128, seed=5)
    b = synthetic.mqar(8, 64, 4, vocab_size=128, seed=5)
    c = synthetic.mqar(8, 64, 4, vocab_size=128, seed=6)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.inputs, c.inputs)
    seeds = synthetic.split_seeds(0)
    assert len(set(seeds.values())) == 3 and set(seeds) == {"train", "validation", "test"}
    assert not set(synthetic.split_seeds(1).values()) & set(seeds.values())


def test_mqar_forget_asks_for_the_latest_value():
    kv, updates, seq_len = 6, 10, 128
    data = synthetic.mqar_forget(40, seq_len, kv, num_updates=updates, vocab_size=256, seed=1)
    changed = 0
    for row, target in zip(data.inputs.tolist(), data.targets.tolist(), strict=True):
        context = 2 * (kv + updates)
        first = {}
        for i in range(0, context, 2):
            first.setdefault(row[i], row[i + 1])
        latest = _context_map(row, context)
        assert len(latest) == kv
        for t, y in enumerate(target):
            if y != IGNORE:
                assert y == latest[row[t]]
                changed += y != first[row[t]]
    assert changed > 0  # re-assignments happened and are what is asked


def test_passkey_answer_is_the_hidden_digits():
    data = synthetic.passkey(30, 200, passkey_len=5, vocab_size=40, seed=2)
    for row, target in zip(data.inputs.tolist(), data.targets.tolist(), strict=True):
        mark = row.index(synthetic.PASSKEY_MARK)
        digits = row[mark + 1:mark + 6]
        query = row.index(synthetic.PASSKEY_QUERY)
        assert query == 200 - 6 and mark + 5 < query
        assert [y for y in target if y != IGNORE] == digits
        assert all(0 <= d <= 9 for d in digits)
        filler = row[:mark] + row[mark + 6:query]
        assert all(t >= synthetic.PASSKEY_FILLER for t in filler)
    depths = [r.index(synthetic.PASSKEY_MARK) for r in data.inputs.tolist()]
    assert max(depths) - min(depths) > 50  # needles at many depths


@pytest.mark.parametrize("task, transform", [
    (synthetic.reverse, lambda x: x[::-1]), (synthetic.sort, sorted), (synthetic.copy, list)])
def test_transduction_targets(task, transform):
    data = task(20, 21, vocab_size=16, seed=0)
    for row, target in zip(data.inputs.tolist(), data.targets.tolist(), strict=True):
        x, sep, y = row[:10], row[10], row[11:]
        assert sep == synthetic.SEPARATOR and min(x) > synthetic.SEPARATOR
        assert y == list(transform(x))
        assert target[10:20] == y and set(target[:10] + target[20:]) == {IGNORE}


def test_induction_target_follows_the_first_trigger():
    data = synthetic.induction(50, 32, vocab_size=16, seed=0)
    for row, target in zip(data.inputs.tolist(), data.targets.tolist(), strict=True):
        first = row.index(synthetic.INDUCTION_TRIGGER)
        assert row[-1] == synthetic.INDUCTION_TRIGGER and first < 30
        assert row.count(synthetic.INDUCTION_TRIGGER) == 2
        assert target[-1] == row[first + 1] and set(target[:-1]) == {IGNORE}


def test_vector_recall_targets_are_the_stored_values():
    data = synthetic.vector_recall(10, 6, num_queries=4, key_dim=3, value_dim=2, seed=0)
    assert data.inputs.shape == (10, 10, 6) and data.targets.shape == (10, 10, 2)
    assert data.mask.tolist() == [[False] * 6 + [True] * 4] * 10
    for x, y in zip(data.inputs, data.targets, strict=True):
        store = {tuple(np.round(k.tolist(), 5)): v for k, v in zip(x[:6, :3], x[:6, 3:5],
                                                                   strict=True)}
        torch.testing.assert_close(x[:6, :3].norm(dim=-1), torch.full((6,), 3 ** 0.5))
        for t in range(6, 10):
            assert x[t, -1] == 1 and torch.all(x[t, 3:5] == 0)
            torch.testing.assert_close(y[t], store[tuple(np.round(x[t, :3].tolist(), 5))])


@pytest.mark.parametrize("call, match", [
    (lambda: synthetic.mqar(2, 64, 17, vocab_size=256), "num_kv_pairs"),
    (lambda: synthetic.mqar(2, 63, 4, vocab_size=256), "seq_len must be even"),
    (lambda: synthetic.mqar(2, 64, 4, vocab_size=64), "vocab_size"),
    (lambda: synthetic.mqar_forget(2, 64, 8, num_updates=20, vocab_size=256), "seq_len"),
    (lambda: synthetic.passkey(2, 8, passkey_len=4), "too short"),
    (lambda: synthetic.reverse(2, 20), "odd"),
    (lambda: synthetic.induction(2, 3), "seq_len"),
    (lambda: synthetic.vector_recall(2, 0), "num_pairs"),
])
def test_bad_arguments_are_refused(call, match):
    with pytest.raises(ValueError, match=match):
        call()
