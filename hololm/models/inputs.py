"""Checks on what a user passes to a model, so a mistake fails with a message naming it."""

from __future__ import annotations

import torch


def validate_input_ids(input_ids, vocab_size: int) -> torch.Tensor:
    if not isinstance(input_ids, torch.Tensor):
        raise TypeError(f"input_ids must be a torch.Tensor of token ids, got "
                        f"{type(input_ids).__name__}")
    if input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool:
        raise TypeError(f"input_ids must be an integer tensor (torch.long), got {input_ids.dtype}")
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must have shape [batch, seq_len], got "
                         f"{tuple(input_ids.shape)}")
    if input_ids.shape[1] == 0:
        raise ValueError("input_ids is empty: seq_len must be at least 1")
    low, high = input_ids.min().item(), input_ids.max().item()
    if low < 0 or high >= vocab_size:
        raise ValueError(f"input_ids must lie in [0, {vocab_size}) (vocab_size); got values in "
                         f"[{low}, {high}]")
    return input_ids


def validate_attention_mask(attention_mask, input_ids: torch.Tensor, past: int) -> None:
    """Only all-ones masks are supported: recurrent memories have no notion of padding inside
    the sequence, so a padded batch would be silently wrong."""
    if attention_mask is None:
        return
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.dim() != 2:
        raise ValueError("attention_mask must be a [batch, seq_len] tensor")
    B, T = input_ids.shape
    if attention_mask.shape[0] != B or attention_mask.shape[1] not in (T, past + T):
        raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, expected "
                         f"({B}, {T}) or ({B}, {past + T})")
    if not bool((attention_mask != 0).all()):
        raise ValueError("attention_mask contains padding (zeros); hololm models do not support "
                         "padded batches: pass sequences of equal length without padding")


def validate_labels(labels, input_ids: torch.Tensor, vocab_size: int,
                    ignore_index: int = -100) -> None:
    """labels: an integer tensor shaped like input_ids, each a token id in [0, vocab_size) or
    ignore_index (an out-of-range label is an IndexError on CPU and a device-side assert that
    kills the process on CUDA)."""
    if labels is None:
        return
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor of token ids, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor (torch.long), got {labels.dtype}")
    if labels.shape != input_ids.shape:
        raise ValueError(f"labels must have the shape of input_ids {tuple(input_ids.shape)}, got "
                         f"{tuple(labels.shape)}")
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= vocab_size))
    if bool(bad.any()):
        raise ValueError(f"labels must lie in [0, {vocab_size}) (vocab_size) or be {ignore_index} "
                         f"(ignored); got {labels[bad][0].item()}")


def model_signature(model) -> tuple:
    """What a cache must have been built by: the layer types and the model's widths."""
    config = model.config
    return (type(model).__name__, config.hidden_size, config.vocab_size,
            tuple(type(layer).__name__ + ":" + getattr(layer, "kind", "") for layer in
                  model.model.layers))


def validate_cache(cache, model, batch_size: int) -> None:
    """A HoloCache continues only the model that filled it, at the same batch size: another
    model's states would be read with the wrong layout (or silently ignored), so a wrong answer
    would come back instead of an error."""
    signature = model_signature(model)
    if cache.signature is None:
        cache.signature = signature
    elif cache.signature != signature:
        raise ValueError(f"past_key_values was filled by another model ({cache.signature[0]}, "
                         f"hidden_size {cache.signature[1]}, {len(cache.signature[3])} layers); "
                         f"this is {signature[0]}, hidden_size {signature[1]}, "
                         f"{len(signature[3])} layers: start a new cache")
    if len(cache.states) != len(model.model.layers):
        raise ValueError(f"past_key_values has {len(cache.states)} layers, the model "
                         f"{len(model.model.layers)}")
    if cache.batch_size not in (None, batch_size):
        raise ValueError(f"past_key_values holds a batch of {cache.batch_size} but input_ids "
                         f"has batch {batch_size}")
