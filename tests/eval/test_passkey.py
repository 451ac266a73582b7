"""Passkey accuracy: a model that reads the key from the needle scores 100 %, one that always
answers another key 0 %; the logits scored are the key's own (no off-by-one), and a real model
runs through it."""

import pytest
import torch

from hololm.errors import ConfigError
from hololm.eval.passkey import passkey_accuracy
from tests.eval.helpers import TOKENIZER, VOCAB, tiny

NEEDLE = list(b"The pass key is ")


class Oracle(torch.nn.Module):
    """Reads the key from the needle and, at each position p after the question (which ends
    at a), predicts the key's digit p + 1 − a — the next token, so a misaligned input or logit
    scores wrong; with `wrong`, each digit plus one."""

    def __init__(self, wrong: bool = False):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))
        self.wrong = wrong

    def forward(self, input_ids, use_cache, logits_to_keep):
        B, T = input_ids.shape
        logits = torch.zeros(B, logits_to_keep, VOCAB)
        for b, row in enumerate(input_ids.tolist()):
            found = [i + len(NEEDLE) for i in range(T) if row[i:i + len(NEEDLE)] == NEEDLE]
            key, a = row[found[0]:found[0] + 5], found[-1]  # the needle's key; the question's end
            for j, p in enumerate(range(T - logits_to_keep, T)):
                i = p + 1 - a
                digit = key[i] if 0 <= i < len(key) else ord(".")
                logits[b, j, (digit - 48 + self.wrong) % 10 + 48 if 0 <= i < 5 else digit] = 1.0
        return type("Out", (), {"logits": logits})


@pytest.mark.parametrize("wrong, expected", [(False, 1.0), (True, 0.0)])
def test_oracle_scores(wrong, expected):
    rows = passkey_accuracy(Oracle(wrong), TOKENIZER, [200, 333], examples=5, batch_size=2)
    assert [r["length"] for r in rows] == [200, 333]
    assert [r["tokens"] for r in rows] == [200 - 1, 333 - 1]  # up to the key's last digit
    for r in rows:
        assert r["accuracy"] == r["digit_accuracy"] == expected and r["examples"] == 5


def test_a_model_runs_through_it():
    (row,) = passkey_accuracy(tiny("hologpt-delta"), TOKENIZER, [150], examples=3)
    assert 0 <= row["accuracy"] <= row["digit_accuracy"] <= 1


def test_bad_counts():
    with pytest.raises(ConfigError, match="examples and batch_size must be at least 1"):
        passkey_accuracy(Oracle(), TOKENIZER, [200], examples=0)
