import itertools
import time

import pytest
import torch

from hololm.data import packing
from hololm.data.bpe import train_bpe
from hololm.data.corpora import load_documents
from hololm.data.packing import (
    IGNORE_INDEX,
    BatchSampler,
    TokenData,
    document_positions,
    eval_batches,
    load_token_data,
    tokenize_documents,
)
from hololm.data.tokenizers import byte_tokenizer
from hololm.errors import ConfigError, DatasetUnavailableError
from tests.data.helpers import write_jsonl

EOS = 256


@pytest.fixture(scope="module")
def byte_tok():
    return byte_tokenizer()


def flat(n_tokens: int, mask: torch.Tensor | None = None) -> TokenData:
    return TokenData(torch.arange(n_tokens, dtype=torch.int32), mask, 1, n_tokens)


def test_documents_packed_with_eos_after_each(byte_tok):
    data = tokenize_documents(["ab", "héllo"], byte_tok)
    assert data.tokens.dtype == torch.int32
    assert data.tokens.tolist() == [97, 98, EOS, *"héllo".encode(), EOS]
    assert data.loss_mask is None
    assert (data.n_documents, data.n_bytes) == (2, 8)


def test_byte_fast_path_matches_the_tokenizer(byte_tok):
    text = "naïve 日本語 text\n\tdef f(x):\n    return x  # ünïcode"
    assert tokenize_documents([text], byte_tok).tokens[:-1].tolist() == byte_tok(text)["input_ids"]
    # A literal end-of-text marker inside a document is text, not the EOS token.
    assert EOS not in tokenize_documents(["a<|endoftext|>b"], byte_tok).tokens[:-1].tolist()


def test_bpe_tokenizer_packing(tmp_path):
    docs = list(load_documents("shakespeare"))[:3]
    tok = train_bpe(docs, 300, tmp_path)
    data = tokenize_documents(docs, tok)
    expected = []
    for doc in docs:
        expected += tok(doc, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert data.tokens.tolist() == expected
    assert data.n_bytes == sum(len(doc.encode()) for doc in docs)


def test_max_tokens_stops_reading_an_endless_stream(byte_tok):
    pulled = []

    def documents():
        for i in itertools.count():
            pulled.append(i)
            yield "x" * 99  # 100 tokens with EOS
    data = tokenize_documents(documents(), byte_tok, max_tokens=250)
    assert len(data) == 250 and data.n_documents == 3 and data.n_bytes == 99 + 99 + 50
    assert len(pulled) <= packing.CHUNK_CHARS // 99 + 1  # read one encoding batch at most


def test_alpaca_loss_mask_covers_response_and_eos(byte_tok):
    data = tokenize_documents([("P:", "yes"), "plain", ("Q?", "no")], byte_tok)
    expected = [0, 0, 1, 1, 1, 1] + [1] * 6 + [0, 0, 1, 1, 1]
    assert data.loss_mask.tolist() == [bool(m) for m in expected]
    batch = next(eval_batches(data, seq_len=len(data), batch_size=1))
    labels = batch["labels"][0]
    assert (labels == IGNORE_INDEX).tolist() == [not m for m in expected]
    assert labels[2:6].tolist() == [*b"yes", EOS]
    truncated = tokenize_documents([("P:", "yes"), ("Q?", "no")], byte_tok, max_tokens=7)
    assert truncated.loss_mask.tolist() == [False, False, True, True, True, True, False]


def test_alpaca_file_end_to_end(tmp_path, byte_tok, alpaca_rows):
    path = write_jsonl(tmp_path / "alpaca.jsonl", alpaca_rows)
    data = load_token_data(str(path), "train", byte_tok, cache_dir=tmp_path / "cache")
    assert data.loss_mask is not None and 0 < data.loss_mask.float().mean() < 0.2
    assert data.tokens[data.loss_mask].tolist().count(EOS) == data.n_documents
    cached = load_token_data(str(path), "train", byte_tok, cache_dir=tmp_path / "cache")
    assert torch.equal(cached.loss_mask, data.loss_mask) and torch.equal(cached.tokens, data.tokens)


def test_stdlib_byte_tokens_are_fast_and_cached(tmp_path, byte_tok, monkeypatch):
    start = time.perf_counter()
    data = load_token_data("stdlib", "validation", byte_tok, cache_dir=tmp_path)
    assert time.perf_counter() - start < 5
    texts = list(load_documents("stdlib", "validation"))
    assert len(data) == sum(len(t.encode()) + 1 for t in texts)
    assert data.n_documents == len(texts)
    entries = list((tmp_path / "tokens").iterdir())
    assert len(entries) == 1 and entries[0].suffix == ".safetensors"  # no temporary left over

    def no_reading(*args, **kwargs):
        raise AssertionError("a cache hit must not read the corpus")
    monkeypatch.setattr(packing, "load_documents", no_reading)
    again = load_token_data("stdlib", "validation", byte_tok, cache_dir=tmp_path)
    assert torch.equal(again.tokens, data.tokens) and again.n_bytes == data.n_bytes


def test_cache_key_and_location(tmp_path, byte_tok, monkeypatch):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(5):
        (folder / f"{i}.txt").write_text(f"text number {i}\n")
    monkeypatch.setenv("HOLOLM_CACHE", str(tmp_path / "env-cache"))
    first = load_token_data(str(folder), "train", byte_tok)
    assert len(list((tmp_path / "env-cache" / "tokens").iterdir())) == 1
    load_token_data(str(folder), "train", byte_tok, max_tokens=10)  # another key
    load_token_data(str(folder), "validation", byte_tok)  # another key
    assert len(list((tmp_path / "env-cache" / "tokens").iterdir())) == 3
    (folder / "4.txt").write_text("an edited document, longer than before\n")
    edited = load_token_data(str(folder), "train", byte_tok)
    assert not torch.equal(edited.tokens, first.tokens) or len(edited) != len(first)


def test_damaged_cache_entry_is_rebuilt(tmp_path, byte_tok):
    data = tokenize_documents(["abc"], byte_tok, cache_dir=tmp_path, cache_key="k")
    (entry,) = (tmp_path / "tokens").iterdir()
    entry.write_bytes(b"garbage")
    again = tokenize_documents(["abc"], byte_tok, cache_dir=tmp_path, cache_key="k")
    assert torch.equal(again.tokens, data.tokens)


def test_empty_split_and_bad_arguments(byte_tok):
    with pytest.raises(DatasetUnavailableError, match="no documents"):
        tokenize_documents([], byte_tok)
    with pytest.raises(ConfigError, match="max_tokens"):
        tokenize_documents(["a"], byte_tok, max_tokens=0)
    with pytest.raises(ConfigError, match="fewer than seq_len"):
        BatchSampler(flat(10), seq_len=16, batch_size=2, seed=0)
    with pytest.raises(ConfigError, match="fewer than seq_len"):
        next(eval_batches(flat(10), seq_len=16, batch_size=2))


def test_sampler_batches_are_windows_of_the_data():
    data = flat(1000, torch.arange(1000) % 3 != 0)
    batch = next(BatchSampler(data, seq_len=10, batch_size=4, seed=0))
    assert batch["input_ids"].shape == batch["labels"].shape == (4, 10)
    assert batch["input_ids"].dtype == torch.int64
    for row, labels in zip(batch["input_ids"], batch["labels"], strict=True):
        assert torch.equal(row, torch.arange(row[0], row[0] + 10))  # a contiguous window
        assert torch.equal(labels == IGNORE_INDEX, row % 3 == 0)


def test_sampler_is_a_function_of_seed_and_step():
    data = flat(5000)
    a, b = BatchSampler(data, 16, 4, seed=1), BatchSampler(data, 16, 4, seed=1)
    batches = [next(a)["input_ids"] for _ in range(5)]
    assert all(torch.equal(x, next(b)["input_ids"]) for x in batches)
    other = next(BatchSampler(data, 16, 4, seed=2))["input_ids"]
    assert not torch.equal(other, batches[0])
    assert torch.equal(a.batch_for_rank(3, 0, 1)["input_ids"], batches[3])


def test_resume_from_state_sees_the_uninterrupted_batches():
    data = flat(3000)
    run = BatchSampler(data, 32, 3, seed=7)
    uninterrupted = [next(run)["input_ids"] for _ in range(40)]  # crosses epoch boundaries
    first = BatchSampler(data, 32, 3, seed=7)
    for _ in range(25):
        next(first)
    state = first.state_dict()
    resumed = BatchSampler(data, 32, 3, seed=7)
    resumed.load_state_dict(state)
    assert all(torch.equal(next(resumed)["input_ids"], x) for x in uninterrupted[25:])


def test_state_from_another_setup_is_refused():
    state = BatchSampler(flat(3000), 32, 3, seed=7).state_dict()
    with pytest.raises(ConfigError, match="batch_size 3 -> 4"):
        BatchSampler(flat(3000), 32, 4, seed=7).load_state_dict(state)
    with pytest.raises(ConfigError, match="n_tokens"):
        BatchSampler(flat(2000), 32, 3, seed=7).load_state_dict(state)


def test_an_epoch_covers_every_window_once_and_ranks_are_disjoint():
    data, seq_len, batch, world = flat(1007), 10, 5, 4  # 100 windows, 7 tokens of slack
    samplers = [BatchSampler(data, seq_len, batch, seed=3, rank=r, world_size=world)
                for r in range(world)]
    starts = []
    for _ in range(5):  # 5 steps x 4 ranks x 5 = 100 windows: one epoch
        per_rank = [next(s)["input_ids"][:, 0] for s in samplers]
        step_starts = torch.cat(per_rank).sort().values
        assert (step_starts.diff() >= seq_len).all()  # no two ranks share a token
        starts.append(step_starts)
    starts = torch.cat(starts).sort().values
    shift = int(starts[0])
    assert 0 <= shift <= 7 and torch.equal(starts, shift + torch.arange(100) * seq_len)
    assert samplers[0].epoch == 1.0


def test_eval_batches_are_fixed_and_non_overlapping():
    data = flat(1000)
    first = [b["input_ids"] for b in eval_batches(data, 10, 4, max_batches=3)]
    again = [b["input_ids"] for b in eval_batches(data, 10, 4, max_batches=3)]
    assert len(first) == 3 and all(torch.equal(x, y) for x, y in zip(first, again, strict=True))
    starts = torch.cat(first)[:, 0]
    assert (starts.diff() >= 10).all() and starts[-1] >= 900  # spread over the data
    everything = list(eval_batches(data, 10, 32))
    assert [len(b["input_ids"]) for b in everything] == [32, 32, 32, 4]


def test_document_positions_restart_after_each_end_of_text():
    eos = 1
    x = torch.tensor([[5, 1, 9, 9, 1, 1, 4], [2, 3, 4, 5, 6, 7, 8]])
    assert document_positions(x, eos).tolist() == [[0, 1, 0, 1, 2, 0, 0], [0, 1, 2, 3, 4, 5, 6]]
    # a window continuing its document (carried state) counts on; 0 there starts one
    assert document_positions(x, eos, first=torch.tensor([3, 0])).tolist() == [
        [3, 4, 0, 1, 2, 0, 0], [0, 1, 2, 3, 4, 5, 6]]
