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
