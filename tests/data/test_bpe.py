import time

import pytest
from transformers import PreTrainedTokenizerFast

from hololm.data import bpe
from hololm.data.bpe import EOS_TOKEN, train_bpe
from hololm.data.corpora import load_documents
from hololm.data.tokenizers import (
    TokenizerUnavailableError,
    byte_tokenizer,
    get_tokenizer,
    tokenizer_fingerprint,
)
from hololm.errors import ConfigError, DatasetUnavailableError

SAMPLE = "Now is the winter of our discontent,\n  naïve café <|endoftext|>\n\n\tdef f(): pass"


@pytest.fixture(scope="module")
def corpus():
    return list(load_documents("shakespeare"))[:4]


def test_train_cache_and_reload_round_trip(tmp_path, corpus, monkeypatch):
    tok = train_bpe(corpus, 300, tmp_path)
    assert len(tok) == 300 and tok.eos_token == EOS_TOKEN
    ids = tok(SAMPLE, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == SAMPLE  # byte level: every text round-trips
    assert len(ids) < len(SAMPLE.encode())  # merges were learned
    (entry,) = (tmp_path / "bpe").iterdir()  # one entry, no temporary left over
    reloaded = PreTrainedTokenizerFast.from_pretrained(str(entry))
    assert reloaded(SAMPLE)["input_ids"] == tok(SAMPLE)["input_ids"]

    def no_training(*args):
        raise AssertionError("a cached tokenizer must not be retrained")
    monkeypatch.setattr(bpe, "_train", no_training)
    cached = train_bpe(iter(corpus), 300, tmp_path)
    assert tokenizer_fingerprint(cached) == tokenizer_fingerprint(tok)


def test_cache_key_covers_corpus_and_vocab_size(tmp_path, corpus):
    train_bpe(corpus, 300, tmp_path)
    train_bpe(corpus, 320, tmp_path)
    train_bpe(corpus[:2], 300, tmp_path)
    train_bpe([(corpus[0][:1000], corpus[1][:1000])], 280, tmp_path)  # pairs train on both texts
    assert len(list((tmp_path / "bpe").iterdir())) == 4


def test_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="no room"):
        train_bpe(["text"], 256, tmp_path)
    with pytest.raises(DatasetUnavailableError, match="no documents"):
        train_bpe([], 300, tmp_path)


def test_get_tokenizer_by_name(tmp_path, corpus, offline):
    assert tokenizer_fingerprint(get_tokenizer("byte")) == tokenizer_fingerprint(byte_tokenizer())
    trained = get_tokenizer("bpe", corpus, cache_dir=tmp_path, vocab_size=300)
    assert len(trained) == 300
    with pytest.raises(ConfigError, match="pass them"):
        get_tokenizer("bpe")
    saved = tmp_path / "saved"
    trained.save_pretrained(str(saved))
    assert get_tokenizer(str(saved))(SAMPLE)["input_ids"] == trained(SAMPLE)["input_ids"]
    start = time.perf_counter()
    with pytest.raises(TokenizerUnavailableError, match="cannot be reached"):
        get_tokenizer("no-such-org/no-such-tokenizer")
    assert time.perf_counter() - start < 5
