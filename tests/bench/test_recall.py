"""The recall benchmark's harness: scoring, learning-rate selection, and a tiny end-to-end run
through the CLI that writes every output. (Whether models learn is the benchmark's business; the
slow test checks the attention sanity bar of the quick profile.)"""

from __future__ import annotations

import csv
import math

import pytest
import torch
from torch import nn

from hololm import cli
from hololm.bench import recall
from hololm.bench.recall_models import MODELS, VectorModel, build_recall_model
from hololm.bench.recall_profiles import PROFILES, select
from hololm.data import synthetic


class Replay(nn.Module):
    """Answers with one-hot logits of the given answers, batch after batch in order."""

    def __init__(self, answers: torch.Tensor, vocab: int):
        super().__init__()
        self.answers, self.vocab, self.cursor = answers, vocab, 0

    def forward(self, input_ids, use_cache=False):
        part = self.answers[self.cursor:self.cursor + len(input_ids)].clamp(min=0)
        self.cursor += len(input_ids)
        return type("Out", (), {"logits": nn.functional.one_hot(part, self.vocab).float()})


def test_evaluate_scores_only_the_targets():
    data = synthetic.mqar(10, 64, 4, vocab_size=128, seed=0)
    assert recall.evaluate(Replay(data.targets, 128), data, "cpu", max_tokens=64 * 3) == {
        "accuracy": 1.0, "sequence_accuracy": 1.0, "mse": pytest.approx(math.nan, nan_ok=True)}
    wrong = data.targets.clone()
    first = data.scored().int().argmax(dim=1)
    wrong[:5, :][torch.arange(5), first[:5]] = 0  # one wrong answer in each of 5 examples
    result = recall.evaluate(Replay(wrong, 128), data, "cpu")
    assert result["accuracy"] == pytest.approx(1 - 5 / 40)
    assert result["sequence_accuracy"] == pytest.approx(0.5)


def test_evaluate_vector_mse():
    data = synthetic.vector_recall(6, 4, key_dim=3, value_dim=2, seed=0)

    class Zero(nn.Module):
        def forward(self, inputs):
            return torch.zeros(*inputs.shape[:2], 2)

    mse = recall.evaluate(Zero(), data, "cpu")["mse"]
    expected = data.targets[data.mask].pow(2).mean().item()
    assert mse == pytest.approx(expected, rel=1e-5)


def test_best_rows_select_on_validation_not_test():
    rows = [{"task": "t", "model": "m", "d_model": 8, "lr": lr, "validation_score": v,
             "accuracy": a} for lr, v, a in [(1e-3, 0.9, 0.5), (3e-3, 0.5, 0.99),
                                             (1e-2, 0.9, 0.7)]]
    assert [r["lr"] for r in recall.best_rows(rows)] == [1e-3]  # tie → the smaller lr


@pytest.mark.parametrize("family", MODELS)
def test_every_family_builds_causal_and_vector_models(family):
    lm = build_recall_model(family, 64, 32, 2, 40)
    x = torch.randint(64, (2, 40))
    logits = lm(input_ids=x, use_cache=False).logits
    y = x.clone()
    y[:, 20:] = torch.randint(64, (2, 20))
    torch.testing.assert_close(lm(input_ids=y, use_cache=False).logits[:, :20], logits[:, :20],
                               atol=1e-5, rtol=1e-5)
    vector = VectorModel(lm, 7, 3)
    assert vector(torch.randn(2, 10, 7)).shape == (2, 10, 3)
    assert vector.state_bytes(1, 10) > 0


def test_quick_profile_covers_every_task_and_family():
    quick = PROFILES["quick"]
    assert {t.name for t in quick.tasks} == {"mqar", "mqar_forget", "passkey", "reverse", "sort",
                                             "copy", "induction", "vector_recall"}
    assert set(quick.families) >= {"holo", "long", "hologpt", "hsn", "attention", "holo-hybrid"}
    assert len(quick.lrs) >= 2
    passkey = next(t for t in quick.tasks if t.name == "passkey")
    assert max(s["seq_len"] for s in passkey.test) >= 16384


def test_select_refuses_unknown_names():
    with pytest.raises(ValueError, match="unknown task 'nope'.*mqar"):
        select(PROFILES["quick"], ["nope"], None)
    with pytest.raises(ValueError, match="unknown model 'rnn'"):
        select(PROFILES["quick"], None, ["rnn"])


def test_tiny_run_writes_every_output(tmp_path, capsys):
    code = cli.main(["bench", "recall", "--output_dir", str(tmp_path), "--tasks", "mqar",
                     "passkey", "vector_recall", "--models", "attention", "holo", "--steps",
                     "2", "--lrs", "1e-3", "3e-3", "--d_models", "32", "--test_examples", "2",
                     "--workers", "1", "--no_progress"])
    assert code == 0
    for name in ("recall.csv", "recall_sweep.csv", "recall.md", "recall_vs_seq_len.png",
                 "recall_vs_kv_pairs.png", "recall_vs_state.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    with open(tmp_path / "recall.csv") as f:
        rows = list(csv.DictReader(f))
    with open(tmp_path / "recall_sweep.csv") as f:
        sweep = list(csv.DictReader(f))
    assert {"task", "model", "seq_len", "accuracy", "mse", "state_bytes", "params",
            "wall_s"} <= set(rows[0])
    assert len(sweep) == 2 * len(rows)  # two learning rates, one kept
    assert {(r["task"], r["model"]) for r in rows} == {
        (t, m) for t in ("mqar", "passkey", "vector_recall") for m in ("attention", "holo")}
    passkey_lens = {int(r["seq_len"]) for r in rows if r["task"] == "passkey"}
    assert max(passkey_lens) == 16384
    for r in rows:
        if r["task"] == "vector_recall":
            assert math.isfinite(float(r["mse"]))
        else:
            assert 0.0 <= float(r["accuracy"]) <= 1.0
    attention_state = {int(r["seq_len"]): int(r["state_bytes"]) for r in rows
                       if r["task"] == "passkey" and r["model"] == "attention"}
    phasor_state = {int(r["seq_len"]): int(r["state_bytes"]) for r in rows
                    if r["task"] == "passkey" and r["model"] == "holo"}
    assert attention_state[16384] == 256 * attention_state[64]  # a KV cache grows
    assert len(set(phasor_state.values())) == 1  # a holographic state does not
    assert "mqar" in capsys.readouterr().out


@pytest.mark.slow
def test_quick_attention_solves_its_mqar_setting(tmp_path):
    """The harness sanity bar: softmax attention reaches >= 99 % on the quick MQAR setting."""
    assert recall.main(["--quick", "--tasks", "mqar", "--models", "attention", "--output_dir",
                        str(tmp_path), "--no_progress"]) == 0
    with open(tmp_path / "recall.csv") as f:
        rows = list(csv.DictReader(f))
    trained = [r for r in rows if int(r["num_kv_pairs"]) == 4]
    assert min(float(r["accuracy"]) for r in trained) >= 0.99


def test_task_overrides_apply_per_task_and_yield_to_the_caller():
    quick = PROFILES["quick"]
    mqar = quick.for_task("mqar")
    assert (mqar.steps, mqar.lrs, mqar.schedule, mqar.warmup_steps) == (
        1200, (5e-4, 3e-3), "constant", 200)
    assert quick.for_task("copy").steps == quick.steps and quick.for_task("copy").lrs == quick.lrs
    chosen = select(quick, None, None, steps=10, lrs=(1e-3,))
    for task in ("mqar", "copy"):
        settings = chosen.for_task(task)
        assert (settings.steps, settings.lrs, settings.warmup_steps) == (10, (1e-3,), 1)
    assert chosen.for_task("mqar").schedule == "constant"  # what the caller left alone stays
