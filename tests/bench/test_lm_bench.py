"""The LM benchmark's harness: parameter matching, the shared batch stream, the learning-rate
choice, the held-out splits, GPT-2's refusals, and a tiny end-to-end run that writes every
output. (Which family models language best is the benchmark's business, not the tests'.)"""

from __future__ import annotations

import argparse
import csv
import hashlib
import math
from dataclasses import replace

import pytest
import torch

from hololm.bench import lm
from hololm.bench.lm_data import split_streams
from hololm.bench.lm_metrics import losses_by_length
from hololm.bench.lm_models import (
    DEFAULT_MODELS,
    build_candidate,
    match_shape,
    non_embedding_params,
)
from hololm.bench.lm_profiles import CORPORA, QUICK, customise
from hololm.bench.lm_report import headline_table, write_report
from hololm.bench.lm_train import Run, choose
from hololm.data.packing import StreamSampler, TokenData
from hololm.data.tokenizers import byte_tokenizer
from hololm.errors import ConfigError
from hololm.models.presets import build_model

VOCAB, SEQ = 320, 16
TINY = dict(target_params=100_000, depth=2, width_step=16, head_dim=16, seq_len=SEQ,
            batch_size=2, steps=3, warmup_steps=1, lrs=(1e-3, 3e-3), select_tokens=256,
            eval_tokens=200, length_multiples=(1, 4), decode_context=32, decode_steps=2,
            eval_batch_size=4)


@pytest.mark.parametrize("name", DEFAULT_MODELS)
def test_every_candidate_is_matched_within_ten_percent(name):
    target = 100_000
    shape = match_shape(name, target, vocab_size=VOCAB, seq_len=SEQ, depth=2, width_step=16,
                        head_dim=16)
    assert abs(shape.non_embedding / target - 1) <= 0.10
    model = build_candidate(shape, VOCAB, SEQ)  # the real model has the counted size
    assert non_embedding_params(model) == shape.non_embedding
    assert sum(p.numel() for p in model.parameters()) == shape.params


def test_an_unreachable_target_is_refused():
    with pytest.raises(ConfigError, match="within 10%"):
        match_shape("llama", 10, vocab_size=VOCAB, seq_len=SEQ, depth=2, width_step=16,
                    head_dim=16)


def test_non_embedding_leaves_out_embeddings_untied_heads_and_position_tables():
    gpt2 = build_model("gpt2", "tiny", VOCAB, SEQ, hidden_size=32, num_hidden_layers=1,
                       num_attention_heads=2)
    table = gpt2.transformer.wte.weight.numel() + gpt2.transformer.wpe.weight.numel()
    assert non_embedding_params(gpt2) == sum(p.numel() for p in gpt2.parameters()) - table
    shape = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2)
    tied = build_model("llama", "tiny", VOCAB, SEQ, **shape)
    untied = build_model("llama", "tiny", VOCAB, SEQ, tie_word_embeddings=False, **shape)
    assert non_embedding_params(untied) == non_embedding_params(tied)
    assert sum(p.numel() for p in untied.parameters()) > sum(p.numel() for p in tied.parameters())


def _data(n: int, offset: int = 0) -> TokenData:
    """n printable ASCII byte tokens (one UTF-8 byte each)."""
    tokens = 32 + (torch.arange(n, dtype=torch.int32) + offset) % 95
    return TokenData(tokens, None, 1, n)


def test_the_test_set_borrows_the_training_tail_and_nothing_overlaps():
    train, heldout = _data(10_000), _data(300)
    data = split_streams(CORPORA["shakespeare"], byte_tokenizer(), train, heldout,
                         select_tokens=1000, test_tokens=800)
    assert len(data.test) == 800 and len(data.select) == 1000
    assert len(data.train) == 10_000 - 1000 - 500
    assert torch.equal(data.test.tokens[:300], heldout.tokens)
    assert torch.equal(data.test.tokens[300:], train.tokens[-500:])  # the very end
    assert torch.equal(data.select.tokens, train.tokens[8500:9500])  # just before it
    assert data.test.n_bytes == 800  # bytes counted by decoding: one per byte token
    with pytest.raises(ConfigError, match="cannot spare"):
        split_streams(CORPORA["shakespeare"], byte_tokenizer(), train, heldout,
                      select_tokens=9000, test_tokens=800)


def test_the_learning_rate_is_chosen_on_validation_loss():
    runs = [Run(1e-3, val_loss=2.0), Run(3e-3, val_loss=1.5), Run(1e-2, val_loss=math.inf)]
    assert choose(runs).lr == 3e-3
    assert choose([Run(3e-3, val_loss=1.5), Run(1e-3, val_loss=1.5)]).lr == 1e-3  # tie
    assert choose([Run(1e-2, val_loss=math.inf, diverged_at=2)]) is None


def _tiny_profile(models: tuple[str, ...]):
    return customise(QUICK, models=models, corpora=("shakespeare",), **TINY)


def _byte_data():
    text = bytes(range(32, 127)) * 200
    train = TokenData(torch.tensor(list(text), dtype=torch.int32), None, 1, len(text))
    return split_streams(CORPORA["shakespeare"], byte_tokenizer(), train, _data(400, 7),
                         select_tokens=256, test_tokens=400)


def test_every_model_reads_the_same_batches_in_the_same_order():
    profile = _tiny_profile(("holo", "llama", "mamba2"))
    data = _byte_data()
    results, runs, curves = lm.run_corpus(profile, data, torch.device("cpu"), seed=0,
                                          progress=False)
    assert len(runs) == 6 and {r["steps"] for r in runs} == {3}
    assert len({r["stream_hash"] for r in runs}) == 1
    other = customise(profile, models=("holo",), lrs=(1e-3,))
    _, moved, _ = lm.run_corpus(other, data, torch.device("cpu"), seed=1, progress=False)
    assert moved[0]["stream_hash"] != runs[0]["stream_hash"]  # the hash tells streams apart
    for result in results:  # the chosen learning rate has the lowest validation loss
        mine = [r for r in runs if r["model"] == result["model"]]
        assert result["val_loss"] == min(r["val_loss"] for r in mine)
        assert result["lr"] == min(mine, key=lambda r: r["val_loss"])["lr"]
        assert [t["multiple"] for t in result["test"]] == [1, 4]
    assert len(curves) == 6 * 3


def test_carried_state_trains_each_pure_memory_again_and_reads_whole_documents(tmp_path):
    profile = customise(_tiny_profile(("hologpt-delta", "holo-hybrid", "llama")), lrs=(1e-3,),
                        carry_state=True)
    data = _byte_data()
    eos = torch.tensor([data.tokenizer.eos_token_id], dtype=torch.int32)
    # documents of 100 and 30 tokens: only the first reaches the longest test length, 4 x 16
    heldout = torch.cat([_data(100).tokens, eos, _data(30, 3).tokens, eos])
    data = replace(data, heldout=TokenData(heldout, None, 2, 130))
    results, runs, curves = lm.run_corpus(profile, data, torch.device("cpu"), seed=0,
                                          progress=False)
    assert [(r["model"], r["training"]) for r in results] == [
        ("hologpt-delta", "fresh windows"), ("hologpt-delta (carried state)", "carried state"),
        ("holo-hybrid", "fresh windows"), ("llama", "fresh windows")]
    fresh, carried = results[:2]
    assert carried["lr"] == fresh["lr"] and carried["status"] == "ok"
    for row in (fresh, carried):
        assert row["documents"]["status"] == "ok" and row["documents"]["windows"] == 1
        assert row["documents"]["context_length"] == 100
    assert all("documents" not in r for r in results[2:])
    sampler = StreamSampler(data.train, SEQ, profile.batch_size, grad_accum_steps=1)
    stream = hashlib.blake2b(digest_size=16)
    for _ in range(profile.steps):  # the carried run read contiguous lanes
        stream.update(next(sampler)["input_ids"].numpy().tobytes())
    assert runs[1]["model"] == "hologpt-delta (carried state)"
    assert runs[1]["stream_hash"] == stream.hexdigest() != runs[0]["stream_hash"]
    table = headline_table(results, (1, 4), 32)
    assert "whole documents ± se" in table and table.count(" | – | ") >= 2
    write_report(tmp_path, "hololm bench lm", {}, results, runs, curves, (1, 4), 32)
    with open(tmp_path / "lm.csv") as f:
        rows = {r["model"]: r for r in csv.DictReader(f)}
    assert rows["hologpt-delta (carried state)"]["windows@documents"] == "1"
    assert float(rows["hologpt-delta"]["loss@documents"]) > 0
    assert rows["llama"]["loss@documents"] == ""
    short = replace(data, heldout=TokenData(torch.cat([_data(30).tokens, eos]), None, 1, 30))
    model = build_candidate(match_shape("hologpt-delta", 100_000, vocab_size=VOCAB, seq_len=SEQ,
                                        depth=2, width_step=16, head_dim=16), VOCAB, SEQ)
    refused = lm._whole_documents(profile, short, model, _no_autocast)
    assert refused == {"status": "refused: no held-out document has 64 tokens or more"}


def test_gpt2_past_its_positions_is_refused_with_the_reason():
    model = build_model("gpt2", "tiny", VOCAB, SEQ, hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2)
    rows = losses_by_length(model, _data(400), SEQ, (1, 4), tokens=100, batch_size=4,
                            autocast=_no_autocast)
    assert rows[0]["status"] == "ok" and math.isfinite(rows[0]["loss"])
    assert rows[1]["status"].startswith("refused") and "16 positions" in rows[1]["status"]
    result = {"model": "gpt2", "non_embedding": 1e4, "params": 2e4, "status": "ok",
              "test": rows, "decode_tokens_per_s": "refused: 34 tokens exceed the model's 16 "
                                                   "positions"}
    table = headline_table([result], (1, 4), 32)
    assert "| refused |" in table
    assert "gpt2 @4x: context lengths [64] exceed the model's 16 positions" in table
    assert "gpt2 decoding: 34 tokens exceed" in table


def _no_autocast():
    return torch.autocast("cpu", enabled=False)


def test_end_to_end_writes_the_report_and_the_plots(tmp_path, capsys):
    argv = ["--output_dir", str(tmp_path), "--models", "hologpt", "gpt2", "--corpora",
            "shakespeare", "--target_params", "100000", "--depth", "2", "--seq_len", "16",
            "--batch_size", "2", "--steps", "3", "--lrs", "1e-3", "3e-3", "--eval_tokens",
            "200", "--select_tokens", "256", "--decode_context", "32", "--no_progress"]
    assert lm.main(argv) == 0
    text = (tmp_path / "lm.md").read_text()
    assert text.startswith("`hololm bench lm --output_dir ")
    assert "| hologpt |" in text and "| gpt2 |" in text and "Refused: gpt2 @4x" in text
    assert "Learning-rate sweep" in text and text in capsys.readouterr().out
    for name in ("loss_vs_tokens_shakespeare.png", "loss_vs_time_shakespeare.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(tmp_path / "lm_sweep.csv") as f:
        sweep = list(csv.DictReader(f))
    assert [(r["model"], float(r["lr"])) for r in sweep] == [
        ("hologpt", 1e-3), ("hologpt", 3e-3), ("gpt2", 1e-3), ("gpt2", 3e-3)]
    with open(tmp_path / "lm.csv") as f:
        chosen = list(csv.DictReader(f))
    assert [r["model"] for r in chosen] == ["hologpt", "gpt2"]
    assert chosen[1]["status@4x"].startswith("refused")
    assert (tmp_path / "lm_curves.csv").stat().st_size > 0


def test_bad_input_is_refused_with_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown model"):
        lm.main(["--output_dir", str(tmp_path), "--models", "nope"])
    with pytest.raises(ConfigError, match="warmup_steps=5 must be less than steps=5"):
        lm.main(["--output_dir", str(tmp_path), "--steps", "5", "--warmup_steps", "5"])
    with pytest.raises(SystemExit):  # argparse: not a corpus
        lm.main(["--output_dir", str(tmp_path), "--corpora", "nope"])


def test_help_documents_every_flag():
    parser = lm.build_parser()
    text = parser.format_help()
    options = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert len(options) >= 20
    for action in options:
        assert action.help and action.help != argparse.SUPPRESS, action.option_strings
        assert action.option_strings[0] in text
