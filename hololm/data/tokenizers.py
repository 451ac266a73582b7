"""Tokenizers as `transformers` fast tokenizers: a byte-level one that needs no files, a
byte-level BPE trained on the training corpus (cached), and hub tokenizers (gpt2, ...) which need
a download — refused with a clear message when offline. `get_tokenizer` picks one by name."""

from __future__ import annotations

import functools
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import bytes_to_unicode

from hololm.data.bpe import train_bpe
from hololm.data.cache import stable_hash
from hololm.data.hub import hub_reachable
from hololm.errors import ConfigError, HololmError

BYTE_EOS = "<|endoftext|>"


class TokenizerUnavailableError(HololmError):
    """A tokenizer that has to be downloaded could not be loaded (usually: no network)."""


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """Token id = byte value (0..255) of the UTF-8 text; id 256 is the end-of-text token."""
    byte_chars = bytes_to_unicode()  # byte value -> printable char, as GPT-2's byte level
    vocab = {char: byte for byte, char in byte_chars.items()}
    vocab[BYTE_EOS] = 256
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=BYTE_EOS,
                                        bos_token=BYTE_EOS, pad_token=BYTE_EOS)
    tokenizer.model_max_length = 2**31 - 1
    return tokenizer


def load_tokenizer(name: str) -> PreTrainedTokenizerFast:
    """"byte", a local directory saved with `save_pretrained`, or a hub name such as "gpt2"."""
    if name == "byte":
        return byte_tokenizer()
    try:  # a local directory, or a hub tokenizer already in the local cache
        return AutoTokenizer.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError):
        pass
    if not hub_reachable():
        raise TokenizerUnavailableError(
            f"tokenizer {name!r} is not a local directory nor in the Hugging Face cache, and the "
            f"hub cannot be reached (no network). Use tokenizer='byte' offline, or a directory "
            f"written by save_pretrained.")
    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise TokenizerUnavailableError(f"could not load tokenizer {name!r}: {err}") from None


def get_tokenizer(name: str, documents: Iterable | None = None,
                  cache_dir: str | None = None, vocab_size: int = 8192) -> PreTrainedTokenizerFast:
    """"byte"; "bpe": a byte-level BPE of `vocab_size` tokens trained on `documents` (the
    training split: `hololm.data.corpora.load_documents`), cached under `cache_dir`; or, as
    `load_tokenizer`, a directory written by `save_pretrained` or a hub name."""
    if name == "bpe":
        if documents is None:
            raise ConfigError("tokenizer 'bpe' is trained on the training documents: pass them")
        return train_bpe(documents, vocab_size, cache_dir)
    return load_tokenizer(name)


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerFast) -> str:
    """Hash of the whole tokenizer (vocabulary, merges, normalisation, special tokens): equal
    fingerprints encode every text alike, whatever the tokenizer's name or origin."""
    return stable_hash(tokenizer.backend_tokenizer.to_str())


@functools.lru_cache(maxsize=1)
def byte_fingerprint() -> str:
    return tokenizer_fingerprint(byte_tokenizer())
