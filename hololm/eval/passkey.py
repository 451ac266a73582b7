"""Passkey retrieval accuracy of a language model at given context lengths: texts of
hololm/data/passkey_text.py (key at evenly spread depths), read in one forward pass; a text
counts as retrieved when the model's most likely next token is right at every token of the key
(teacher-forced, which for a correct prefix is what greedy decoding would write)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from hololm.data import passkey_text
from hololm.data.packing import tokenize_documents
from hololm.errors import ConfigError


def _encode(text: str, tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """The text's ids as the trainer packs a document, without the end-of-text after it."""
    return tokenize_documents([text], tokenizer).tokens[:-1].long()


def _example(sample: passkey_text.PasskeyText, tokenizer: PreTrainedTokenizerBase
             ) -> tuple[torch.Tensor, int]:
    """(the ids up to the key's last token [L], how many of the last ids are the key's)."""
    end = sample.answer_start + len(sample.key)
    parts = [_encode(part, tokenizer) for part in (
        sample.text[:sample.answer_start], sample.text[sample.answer_start:end], sample.text[end:])]
    ids = _encode(sample.text, tokenizer)
    if not torch.equal(ids, torch.cat(parts)):
        raise ConfigError("the tokenizer merges the pass key with the text around it: passkey "
                          "accuracy is defined for tokenizers that keep them apart (the byte "
                          "tokenizer does)")
    return ids[:len(ids) - len(parts[2])], len(parts[1])


@torch.no_grad()
def passkey_accuracy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                     lengths: Sequence[int], examples: int, *,
                     digits: int = passkey_text.DIGITS, seed: int = 0,
                     batch_size: int = 4) -> list[dict]:
    """One row per length (characters of text): {"length", "tokens", "examples", "accuracy"
    (keys retrieved whole), "digit_accuracy" (key tokens right)}."""
    if examples < 1 or batch_size < 1:
        raise ConfigError(f"examples and batch_size must be at least 1, got {examples} and "
                          f"{batch_size}")
    device = next(model.parameters()).device
    rows = []
    for length in lengths:
        pairs = [_example(s, tokenizer)
                 for s in passkey_text.sample(examples, length, digits, seed + length)]
        whole = right = total = 0
        for start in range(0, examples, batch_size):
            batch = pairs[start:start + batch_size]
            if len({len(ids) for ids, _ in batch}) > 1 or len({k for _, k in batch}) > 1:
                raise ConfigError("passkey texts of one length must tokenize to one length")
            ids = torch.stack([ids for ids, _ in batch]).to(device)  # [b, L]
            key = batch[0][1]
            logits = model(input_ids=ids[:, :-1], use_cache=False,
                           logits_to_keep=key).logits  # [b, key, V]
            hits = logits.argmax(-1) == ids[:, -key:]
            whole += int(hits.all(-1).sum())
            right += int(hits.sum())
            total += hits.numel()
        rows.append({"length": length, "tokens": int(len(pairs[0][0])), "examples": examples,
                     "accuracy": whole / examples, "digit_accuracy": right / total})
    return rows
