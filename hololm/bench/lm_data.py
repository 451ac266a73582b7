"""The token streams of `hololm bench lm`: the corpus tokenized as the trainer does it, cut into
the training stream, the held-out set the learning rate is chosen on, and the test set scored.

The test set is the corpus's held-out split; where that is shorter than the test needs (stdlib's
held-out files hold ~45k BPE tokens), the last tokens of the training split are added to it. The
learning-rate set is cut from the training split just before those. Neither is ever trained on,
and the two never overlap, so choosing the learning rate does not peek at the test set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from hololm.bench.lm_profiles import Corpus
from hololm.data.packing import TokenData
from hololm.errors import ConfigError
from hololm.train.config import TrainConfig
from hololm.train.trainer import load_data


@dataclass
class CorpusData:
    corpus: Corpus
    tokenizer: PreTrainedTokenizerBase
    train: TokenData
    select: TokenData  # the learning rate is chosen on it
    test: TokenData  # the reported losses
    heldout: TokenData  # the corpus's held-out split alone: whole documents, each ending in EOS


def load_corpus(corpus: Corpus, *, select_tokens: int, test_tokens: int,
                cache_dir: str | None = None, data_dir: str | None = None,
                max_train_tokens: int | None = None) -> CorpusData:
    """The corpus's tokenizer and its three streams (see the module docstring); tokenized data
    and BPE tokenizers are cached as the trainer caches them."""
    cfg = TrainConfig(dataset=corpus.dataset, tokenizer=corpus.tokenizer,
                      bpe_vocab_size=corpus.bpe_vocab_size, cache_dir=cache_dir,
                      data_dir=data_dir, max_train_tokens=max_train_tokens,
                      max_eval_tokens=None)
    tokenizer, train, heldout = load_data(cfg)
    return split_streams(corpus, tokenizer, train, heldout, select_tokens, test_tokens)


def split_streams(corpus: Corpus, tokenizer: PreTrainedTokenizerBase, train: TokenData,
                  heldout: TokenData, select_tokens: int, test_tokens: int) -> CorpusData:
    borrowed = max(0, test_tokens - len(heldout))  # test tokens taken from the training tail
    kept = len(train) - borrowed - select_tokens
    if kept < len(train) // 2:
        raise ConfigError(f"{corpus.label}: {len(train):,} training tokens cannot spare "
                          f"{select_tokens:,} for choosing the learning rate and {borrowed:,} "
                          f"for the test set; ask for fewer")
    select = _part(train, kept, kept + select_tokens, tokenizer)
    test = heldout
    if borrowed:
        tail = _part(train, kept + select_tokens, len(train), tokenizer)
        test = TokenData(torch.cat([heldout.tokens, tail.tokens]), None,
                         heldout.n_documents + tail.n_documents, heldout.n_bytes + tail.n_bytes)
    return CorpusData(corpus, tokenizer, _part(train, 0, kept, None), select, test, heldout)


def _part(data: TokenData, start: int, stop: int,
          tokenizer: PreTrainedTokenizerBase | None) -> TokenData:
    """Tokens [start, stop) of `data`; their UTF-8 bytes counted by decoding them (needed for
    bits per byte) when a tokenizer is given, else left at 0. The benchmark's corpora have no
    loss mask (every token is a target)."""
    if data.loss_mask is not None:
        raise ConfigError("the LM benchmark scores every token; this corpus has a loss mask "
                          "(instruction data)")
    tokens = data.tokens[start:stop]
    n_bytes = 0
    if tokenizer is not None:
        n_bytes = len(tokenizer.decode(tokens.tolist(), skip_special_tokens=True).encode())
    eos = tokenizer.eos_token_id if tokenizer is not None else None
    documents = int((tokens == eos).sum()) if eos is not None else 0
    return TokenData(tokens, None, documents, n_bytes)
