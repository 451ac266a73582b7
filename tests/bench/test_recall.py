"""The recall benchmark's harness: whole-vocabulary scoring, the slice mixture, learning-rate
selection, the attention gate, and tiny end-to-end runs through the CLI that write every output.
(Whether models learn is the benchmark's business; the slow test checks the attention bar of the
quick profile.)"""

from __future__ import annotations

import csv
import math

import pytest
import torch
from torch import nn

from hololm import cli
from hololm.bench import recall
from hololm.bench.recall_models import (
    MODELS,
    OUTSIDE,
    VectorModel,
    build_recall_model,
    state_bytes,
)
from hololm.bench.recall_profiles import PROFILES, Profile, select, slice_length
from hololm.data import synthetic
from hololm.errors import ConfigError


class Replay(nn.Module):
    """A causal LM stand-in whose final hidden states are the given logits (identity head),
    batch after batch in order."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits, self.cursor = logits, 0

    def forward(self, input_ids, use_cache=False, output_hidden_states=False, logits_to_keep=0):
        part = self.logits[self.cursor:self.cursor + len(input_ids)]
        self.cursor += len(input_ids)
        return type("Out", (), {"hidden_states": (part,), "logits": part[:, -1:]})

    def get_output_embeddings(self):
        return nn.Identity()


def one_hot(answers: torch.Tensor, vocab: int) -> torch.Tensor:
    return nn.functional.one_hot(answers.clamp(min=0), vocab).float()


def test_evaluate_scores_only_the_targets():
    data = synthetic.mqar(10, 64, 4, vocab_size=128, seed=0)
    assert recall.evaluate(Replay(one_hot(data.targets, 128)), data, "cpu",
                           max_tokens=64 * 3) == {
        "accuracy": 1.0, "sequence_accuracy": 1.0, "mse": pytest.approx(math.nan, nan_ok=True)}
    wrong = data.targets.clone()
    first = data.scored().int().argmax(dim=1)
    wrong[:5, :][torch.arange(5), first[:5]] = 0  # one wrong answer in each of 5 examples
    result = recall.evaluate(Replay(one_hot(wrong, 128)), data, "cpu")
    assert result["accuracy"] == pytest.approx(1 - 5 / 40)
    assert result["sequence_accuracy"] == pytest.approx(0.5)


def test_accuracy_is_the_argmax_over_the_whole_vocabulary():
    """Zoology's score: right among the value symbols is not enough when a key symbol (or any
    other token) gets more mass."""
    vocab = 256
    data = synthetic.mqar(8, 64, 4, vocab_size=vocab, seed=1)
    right = 5 * one_hot(data.targets, vocab)
    assert recall.evaluate(Replay(right), data, "cpu")["accuracy"] == 1.0
    # the value still wins among the values (upper half), but a key token outscores it in half
    # of the examples
    elsewhere = right.clone()
    elsewhere[:4, :, 1] = 9.0
    values = elsewhere[..., vocab // 2:].argmax(-1) + vocab // 2
    scored = data.scored()
    assert (values[scored] == data.targets[scored]).all()
    assert recall.evaluate(Replay(elsewhere), data, "cpu")["accuracy"] == pytest.approx(0.5)


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
    # the training path: the head on the final hidden states gives the same logits
    hidden = lm(input_ids=x, use_cache=False, output_hidden_states=True,
                logits_to_keep=1).hidden_states[-1]
    torch.testing.assert_close(lm.get_output_embeddings()(hidden), logits, atol=1e-5, rtol=1e-5)
    assert 0 < state_bytes(lm, 10) <= state_bytes(lm, 1000)
    if family in OUTSIDE:
        return  # no hololm blocks for a vector task
    vector = VectorModel(lm, 7, 3)
    assert vector(torch.randn(2, 10, 7)).shape == (2, 10, 3)


def test_matrix_dim_sets_the_matrix_memories_state():
    """--matrix_dim: hologpt and its variants hold width x matrix_dim numbers per layer (4
    bytes each, plus the short conv's last 3 inputs of q, k, v); other families ignore it."""
    conv = 2 * 3 * 3 * 64 * 4  # layers x kernel - 1 x q, k, v x width x bytes
    for matrix_dim in (64, 32, 16):
        lm = build_recall_model("hologpt-delta", 64, 64, 2, 40, matrix_dim)
        assert state_bytes(lm, 40) == 2 * 64 * matrix_dim * 4 + conv
    assert state_bytes(build_recall_model("hologpt-delta", 64, 64, 2, 40), 40) == \
        2 * 64 * 64 * 4 + conv
    assert state_bytes(build_recall_model("long", 64, 64, 2, 40, 16), 40) == \
        state_bytes(build_recall_model("long", 64, 64, 2, 40), 40)
    with pytest.raises(ConfigError, match="matrix_dim 24 must divide the width 64"):
        build_recall_model("hologpt", 64, 64, 2, 40, 24)


@pytest.mark.parametrize("name", ["quick", "standard", "full"])
def test_mqar_trains_on_a_slice_mixture_and_tests_longer(name):
    profile = PROFILES[name]
    mqar = next(t for t in profile.tasks if t.name == "mqar")
    assert mqar.vocab_size >= 256  # scored over a real vocabulary, not a few symbols
    assert len(mqar.train) >= 2 and all(s in mqar.test for s in mqar.train)
    longest_train = max(slice_length(mqar, s) for s in mqar.train)
    test_only = [s for s in mqar.test if s not in mqar.train]
    assert test_only and min(slice_length(mqar, s) for s in test_only) > longest_train
    assert max(slice_length(mqar, s) for s in mqar.test) >= 4 * min(
        slice_length(mqar, s) for s in mqar.train)
    assert len(profile.for_task("mqar").lrs) >= (2 if name == "quick" else 3)
    # an original setting beside its improvement, and both references
    assert set(profile.families) >= {"holo", "holo-conv", "hologpt", "hologpt-delta",
                                     "attention", "mamba2"}
    if name != "quick":
        assert set(profile.families) >= {"holo-copies", "long", "hsn", "hsn-conv"}


def test_standard_and_full_span_three_widths_and_full_keeps_the_other_tasks():
    for name in ("standard", "full"):
        assert len(PROFILES[name].for_task("mqar").d_models) >= 3
    assert PROFILES["standard"].sweep_d_model in PROFILES["standard"].d_models
    assert {t.name for t in PROFILES["full"].tasks} >= {"mqar", "passkey", "induction", "copy"}


def test_a_sweep_at_one_width_carries_its_learning_rate_to_the_others(tmp_path):
    assert recall.main(["--standard", "--models", "attention", "holo", "--steps", "2", "--lrs",
                        "1e-3", "3e-3", "--d_models", "32", "64", "--test_examples", "2",
                        "--gate", "0", "--output_dir", str(tmp_path), "--workers", "1",
                        "--no_progress"]) == 0
    sweep, chosen = _read(tmp_path / "recall_sweep.csv"), _read(tmp_path / "recall.csv")
    for model in ("attention", "holo"):
        lrs = {d: {r["lr"] for r in sweep if r["model"] == model and r["d_model"] == d}
               for d in ("32", "64")}
        assert lrs["64"] == {"0.001", "0.003"} and len(lrs["32"]) == 1
        picked = {r["lr"] for r in chosen if r["model"] == model and r["d_model"] == "64"}
        assert lrs["32"] == picked
    # widths without the sweep width: every width is swept
    assert select(PROFILES["standard"], None, None, d_models=(32,)).sweep_d_model is None


def test_batches_mix_the_training_slices_without_padding():
    slices = [synthetic.mqar(20, t, 2, vocab_size=256, seed=t) for t in (16, 32)]
    order = torch.Generator().manual_seed(0)
    lengths = [recall._batch(slices, 4, order, "cpu").inputs.shape[1] for _ in range(40)]
    assert set(lengths) == {16, 32}
    assert 10 <= lengths.count(16) <= 30


def test_gate_drops_the_tasks_attention_does_not_solve():
    def row(task, model, acc, train=True, mse=math.nan, d=32):
        return {"task": task, "model": model, "d_model": d, "lr": 1e-3, "seq_len": 64,
                "num_kv_pairs": 4, "train_slice": train, "accuracy": acc, "mse": mse,
                "validation_score": 0.5, "steps": 300}  # one run per (task, width)

    tasks = tuple(t for t in PROFILES["full"].tasks if t.name in (
        "mqar", "induction", "passkey", "vector_recall"))
    rows = [row("mqar", "attention", 0.995), row("mqar", "attention", 0.2, train=False),
            row("induction", "attention", 0.06), row("induction", "attention", 1.0, d=64),
            row("passkey", "attention", 0.55), row("passkey", "attention", 0.995, d=64),
            row("passkey", "attention", 0.5, d=64),
            row("vector_recall", "attention", math.nan, mse=0.005)]
    dropped = recall.gate(rows, Profile(tasks=tasks))
    assert set(dropped) == {"passkey"}  # a width must solve every training slice
    assert "T=64 kv=4: 55.0 % on its training slices (d=32" in dropped["passkey"]
    assert recall.gate(rows, Profile(tasks=tasks, gate=0.999)).keys() == {
        "mqar", "passkey", "vector_recall"}


def test_select_refuses_unknown_names():
    with pytest.raises(ValueError, match="unknown task 'nope'.*mqar"):
        select(PROFILES["quick"], ["nope"], None)
    with pytest.raises(ValueError, match="unknown model 'rnn'"):
        select(PROFILES["quick"], None, ["rnn"])


def _read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_tiny_run_writes_every_output(tmp_path, capsys):
    code = cli.main(["bench", "recall", "--output_dir", str(tmp_path), "--tasks", "mqar",
                     "--models", "attention", "holo", "mamba2", "--steps", "2", "--lrs", "1e-3",
                     "3e-3", "--d_models", "32", "64", "--test_examples", "2", "--gate", "0",
                     "--workers", "1", "--no_progress"])
    assert code == 0
    for name in ("recall.csv", "recall_sweep.csv", "recall.md", "recall_vs_seq_len.png",
                 "recall_vs_kv_pairs.png", "recall_vs_state.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    rows, sweep = _read(tmp_path / "recall.csv"), _read(tmp_path / "recall_sweep.csv")
    assert {"task", "model", "seq_len", "accuracy", "train_slice", "state_bytes",
            "state_bytes_longest", "params", "wall_s"} <= set(rows[0])
    assert len(sweep) == 2 * len(rows)  # two learning rates, one kept
    assert {(r["model"], r["d_model"]) for r in rows} == {
        (m, d) for m in ("attention", "holo", "mamba2") for d in ("32", "64")}
    assert {(r["seq_len"], r["num_kv_pairs"], r["train_slice"]) for r in rows} == {
        ("32", "2", "True"), ("64", "4", "True"), ("128", "8", "False"), ("128", "16", "False")}

    def state(model, d, seq_len="128"):
        return {int(r["state_bytes_longest"]) for r in rows if r["model"] == model
                and r["d_model"] == d and r["seq_len"] == seq_len}

    # the x axis: memories grow with the width, attention's KV cache is the one at T=128
    for model in ("holo", "mamba2", "attention"):
        assert min(state(model, "64")) > max(state(model, "32"))
    kv = {int(r["seq_len"]): int(r["state_bytes"]) for r in rows
          if r["model"] == "attention" and r["d_model"] == "32"}
    assert state("attention", "32", "32") == {kv[128]} and kv[128] == 4 * kv[32]
    assert state("holo", "32", "32") == state("holo", "32", "128")  # a memory does not grow
    report = (tmp_path / "recall.md").read_text()
    assert report.startswith("```bash\nhololm bench recall --output_dir")
    assert "dropped" not in report
    assert "mqar" in capsys.readouterr().out


def test_a_task_attention_fails_is_dropped_with_a_note(tmp_path):
    assert recall.main(["--tasks", "mqar", "--models", "attention", "holo", "--steps", "1",
                        "--lrs", "1e-3", "--d_models", "32", "--test_examples", "2",
                        "--output_dir", str(tmp_path), "--workers", "1", "--no_progress"]) == 0
    assert {r["model"] for r in _read(tmp_path / "recall.csv")} == {"attention"}
    report = (tmp_path / "recall.md").read_text()
    assert "**mqar**: dropped: softmax attention reached T=32 kv=2:" in report
    assert "short of the 99 % bar" in report


@pytest.mark.slow
def test_quick_attention_solves_every_mqar_training_slice(tmp_path):
    """The harness bar: softmax attention reaches >= 99 % on every training slice of the quick
    profile's MQAR at one of its widths."""
    assert recall.main(["--quick", "--models", "attention", "--output_dir", str(tmp_path),
                        "--no_progress"]) == 0
    trained = [r for r in _read(tmp_path / "recall.csv") if r["train_slice"] == "True"]
    assert max(min(float(r["accuracy"]) for r in trained if r["d_model"] == d)
               for d in {r["d_model"] for r in trained}) >= 0.99


def test_task_overrides_apply_per_task_and_yield_to_the_caller():
    full = PROFILES["full"]
    assert full.for_task("copy").d_models == (128,) and full.for_task("copy").steps == 5000
    assert full.for_task("mqar").d_models == full.d_models
    chosen = select(full, None, None, steps=10, lrs=(1e-3,))
    for task in ("mqar", "copy"):
        settings = chosen.for_task(task)
        assert (settings.steps, settings.lrs, settings.warmup_steps) == (10, (1e-3,), 1)
    assert chosen.for_task("copy").d_models == (128,)  # what the caller left alone stays
