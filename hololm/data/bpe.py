"""A byte-level BPE tokenizer trained on the training corpus with `tokenizers`, cached on disk.

Byte level: any text encodes (no unknown token) and decodes back exactly. The cache entry
`<cache_dir>/bpe/<hash>/` is named by the hash of the training texts and the vocabulary size,
written with `save_pretrained` into a temporary directory renamed into place, and read back
with `PreTrainedTokenizerFast.from_pretrained(dir)`."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from hololm.data.cache import resolve_cache_dir, stable_hash
from hololm.errors import ConfigError, DatasetUnavailableError

EOS_TOKEN = "<|endoftext|>"  # GPT-2's end-of-text token, as the byte tokenizer's
BYTE_ALPHABET = 256
MAX_TRAINING_CHARS = 200_000_000  # BPE statistics settle long before; bounds time and memory
FORMAT_VERSION = 1  # bump when the tokenizer's construction changes, to retire old entries


def train_bpe(documents: Iterable, vocab_size: int, cache_dir: str | os.PathLike | None = None,
              *, max_chars: int = MAX_TRAINING_CHARS) -> PreTrainedTokenizerFast:
    """Train (or reload from the cache) a BPE of `vocab_size` tokens, EOS included, on the
    texts of `documents` (strings, or (prompt, response) pairs), up to `max_chars` characters."""
    if vocab_size <= BYTE_ALPHABET:
        raise ConfigError(f"bpe_vocab_size {vocab_size} leaves no room for merges: the byte "
                          f"alphabet and EOS take {BYTE_ALPHABET + 1}")
    texts, digest = _collect(documents, max_chars)
    key = stable_hash("bpe", FORMAT_VERSION, vocab_size, digest)
    target = resolve_cache_dir(cache_dir) / "bpe" / key
    if not (target / "tokenizer.json").is_file():
        _save_atomically(_train(texts, vocab_size), target)
    return PreTrainedTokenizerFast.from_pretrained(str(target))


def _collect(documents: Iterable, max_chars: int) -> tuple[list[str], str]:
    texts: list[str] = []
    digest = hashlib.blake2b(digest_size=16)
    total = 0
    for doc in documents:
        for text in (doc,) if isinstance(doc, str) else doc:
            texts.append(text)
            digest.update(text.encode())
            digest.update(b"\x00")  # so that ("ab", "c") and ("a", "bc") differ
            total += len(text)
        if total >= max_chars:
            break
    if not texts:
        raise DatasetUnavailableError("no documents to train the BPE tokenizer on")
    return texts, digest.hexdigest()


def _train(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS_TOKEN],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS_TOKEN,
                                        bos_token=EOS_TOKEN, pad_token=EOS_TOKEN)
    tokenizer.model_max_length = 2**31 - 1  # documents are packed, not truncated
    return tokenizer


def _save_atomically(tokenizer: PreTrainedTokenizerFast, target: Path) -> None:
    """A reader never sees a half-written directory; of two concurrent writers, one wins."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer.save_pretrained(str(tmp))
    try:
        os.replace(tmp, target)
    except OSError:  # another process renamed its copy into place first
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "tokenizer.json").is_file():
            raise
