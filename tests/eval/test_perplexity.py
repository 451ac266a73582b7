"""evaluate_perplexity: the loss definition, streaming through the cache equals the full pass,
bits per byte, masks, limits; plots and CSV; evaluate_checkpoint end to end."""

import csv
import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from hololm.data.packing import load_token_data
from hololm.errors import CheckpointError, ConfigError
from hololm.eval import evaluate_checkpoint, evaluate_perplexity, plot_perplexity, write_csv
from hololm.eval.perplexity import evaluate_documents
from tests.eval.helpers import TOKENIZER, VOCAB, tiny

TOKENS = torch.randint(0, VOCAB, (400,), generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def test_loss_is_the_mean_next_token_nll_over_non_overlapping_windows():
    model = tiny("hologpt")
    rows = evaluate_perplexity(model, TOKENS, [32, 100], batch_size=3, bytes_per_token=1.5)
    for row, length in zip(rows, [32, 100], strict=True):
        n = (TOKENS.numel() - 1) // length
        windows = torch.stack([TOKENS[i * length:i * length + length + 1] for i in range(n)])
        logits = model(windows[:, :-1]).logits
        ref = torch.nn.functional.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten())
        ref = ref.item()
        assert row["windows"] == n and row["tokens"] == n * length and row["mode"] == "full"
        assert row["loss"] == pytest.approx(ref, rel=1e-5)
        assert row["perplexity"] == pytest.approx(math.exp(ref), rel=1e-5)
        assert row["bits_per_byte"] == pytest.approx(ref / math.log(2) / 1.5, rel=1e-5)
        # the standard error across windows (the independent units) of their mean loss
        per_window = torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), windows[:, 1:].flatten(), reduction="none").view(n, -1)
        means = per_window.mean(1).double()
        assert row["loss_se"] == pytest.approx((means.std() / math.sqrt(n)).item(), rel=1e-4)


@torch.no_grad()
def test_tokens_per_length_takes_the_windows_that_cover_it():
    model = tiny("long")
    rows = evaluate_perplexity(model, TOKENS, [32, 100], tokens_per_length=70)
    assert [r["windows"] for r in rows] == [3, 1]  # ceil(70 / 32), ceil(70 / 100)
    assert math.isnan(rows[1]["loss_se"])  # one window: no spread to estimate
    capped = evaluate_perplexity(model, TOKENS, [32], tokens_per_length=10_000, max_windows=5)
    assert capped[0]["windows"] == 5


@pytest.mark.parametrize("model_type,overrides", [
    ("holo", {"hybrid_ratio": 0}), ("holo", {"hybrid_ratio": 2}), ("long", {}),
    ("hologpt", {}), ("hsn", {}),
])
def test_streaming_through_the_cache_equals_the_full_forward(model_type, overrides):
    model = tiny(model_type, **overrides)
    full = evaluate_perplexity(model, TOKENS, [96], batch_size=2)
    chunked = evaluate_perplexity(model, TOKENS, [96, 16], batch_size=2, chunk_size=24)
    assert [r["mode"] for r in chunked] == ["streaming", "full"]  # 16 fits in one chunk
    assert chunked[0]["loss"] == pytest.approx(full[0]["loss"], rel=1e-5)


def test_streaming_is_ignored_for_models_without_a_hololm_cache():
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=1, n_head=2,
                                       n_positions=64)).eval()
    rows = evaluate_perplexity(model, TOKENS, [64], chunk_size=16, max_windows=2)
    assert rows[0]["mode"] == "full" and rows[0]["bits_per_byte"] is None
    with pytest.raises(ConfigError, match="exceed the model's 64 positions"):
        evaluate_perplexity(model, TOKENS, [128])


def test_loss_mask_scores_only_masked_in_targets():
    model = tiny("long")
    mask = torch.zeros(TOKENS.shape, dtype=torch.bool)
    mask[::3] = True
    row = evaluate_perplexity(model, TOKENS, [50], loss_mask=mask)[0]
    windows = TOKENS[:350].view(7, 50)  # (400 - 1) // 50 = 7 windows: their inputs
    targets = TOKENS[1:351].view(7, 50).clone()
    targets[~mask[1:351].view(7, 50)] = -100
    with torch.no_grad():
        logits = model(windows).logits
    ref = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
    assert row["tokens"] == int((targets != -100).sum())
    assert row["loss"] == pytest.approx(ref.item(), rel=1e-5)


def test_limits_and_errors():
    model = tiny("hologpt")
    row = evaluate_perplexity(model, TOKENS, [10], max_windows=4)[0]
    assert (row["windows"], row["tokens"]) == (4, 40)
    with pytest.raises(ConfigError, match="context length 400 needs at least 401"):
        evaluate_perplexity(model, TOKENS, [400])
    with pytest.raises(ValueError, match="batch_size"):
        evaluate_perplexity(model, TOKENS, [10], batch_size=0)
    with pytest.raises(ValueError, match="1-D"):
        evaluate_perplexity(model, TOKENS.view(20, 20), [10])


def test_plot_and_csv(tmp_path):
    rows = [{"context_length": n, "mode": "full", "windows": 1, "tokens": n, "loss": 3 / n**0.1,
             "perplexity": math.exp(3 / n**0.1), "bits_per_byte": None, "label": label}
            for label in ("holo", "gpt2") for n in (256, 1024, 4096, 16384)]
    for metric in ("loss", "perplexity"):
        png = plot_perplexity(rows, tmp_path / f"{metric}.png", metric=metric,
                              train_context=4096)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="metric"):
        plot_perplexity(rows, tmp_path / "x.png", metric="accuracy")
    with write_csv(rows, tmp_path / "rows.csv").open() as f:
        read = list(csv.DictReader(f))
    assert len(read) == 8 and read[0]["label"] == "holo" and read[0]["context_length"] == "256"


def test_evaluate_checkpoint_on_a_local_corpus(tmp_path, checkpoint_dir):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(4):
        (corpus / f"doc{i}.txt").write_text(f"document {i}: " + "the quick brown fox " * 20)
    out = tmp_path / "eval"
    rows = evaluate_checkpoint(checkpoint_dir, str(corpus), context_lengths=[16, 64],
                               max_windows=3, chunk_size=32, cache_dir=tmp_path / "cache",
                               output_dir=out)
    assert [r["context_length"] for r in rows] == [16, 64]
    assert [r["mode"] for r in rows] == ["full", "streaming"]
    for row in rows:
        assert row["windows"] == 3 and math.isfinite(row["loss"])
        # byte tokenizer on ASCII text: one byte per token, but the EOS after a document has none
        bits = row["loss"] / math.log(2)
        assert bits <= row["bits_per_byte"] < bits / 0.95
    assert (out / "perplexity.csv").is_file() and (out / "perplexity.png").is_file()
    data = load_token_data(str(corpus), "validation", TOKENIZER, cache_dir=tmp_path / "cache")
    direct = evaluate_perplexity(tiny("holo", hybrid_ratio=0), data.tokens, [16], max_windows=3)
    assert rows[0]["loss"] == pytest.approx(direct[0]["loss"], rel=1e-6)  # the saved model
    with pytest.raises(CheckpointError):
        evaluate_checkpoint(tmp_path / "missing", str(corpus))


@torch.no_grad()
def test_whole_documents_and_packed_windows():
    """Documents read whole (first token to end-of-text), through the cache or in one pass; a
    window packing documents is read apart with the end-of-text's id."""
    eos = TOKENIZER.eos_token_id
    tokens = TOKENS.masked_fill(TOKENS == eos, 0)
    tokens[[39, 139, 150, 399]] = eos  # documents of 39, 99, 10 and 248 tokens before EOS
    model = tiny("long")
    row = evaluate_documents(model, tokens, eos, 90, bytes_per_token=1.0)
    assert (row["mode"], row["windows"], row["tokens"]) == ("documents", 2, 99 + 248)
    assert row["context_length"] == round((99 + 248) / 2)
    streamed = evaluate_documents(model, tokens, eos, 90, chunk_size=32)
    assert streamed["loss"] == pytest.approx(row["loss"], rel=1e-5)
    first = tokens[40:140][None]
    alone = torch.nn.functional.cross_entropy(model(first[:, :-1]).logits[0], first[0, 1:],
                                              reduction="sum")
    assert evaluate_documents(model, tokens, eos, 90, max_documents=1)["loss"] == \
        pytest.approx(alone.item() / 99, rel=1e-5)
    with pytest.raises(ConfigError, match="no held-out document has 500 tokens"):
        evaluate_documents(model, tokens, eos, 500)
    # a window holding the boundary at 39: with the EOS id, the second document is read alone
    apart = evaluate_perplexity(model, tokens[:61], [60], eos_token_id=eos)[0]["loss"]
    across = evaluate_perplexity(model, tokens[:61], [60])[0]["loss"]
    head, tail = tokens[:41][None], tokens[40:61][None]
    expected = sum(torch.nn.functional.cross_entropy(model(x[:, :-1]).logits[0], x[0, 1:],
                                                     reduction="sum").item()
                   for x in (head, tail)) / 60
    assert apart == pytest.approx(expected, rel=1e-5) and apart != across
