"""Checks on what a user passes to a model, so a mistake fails with a message naming it."""

from __future__ import annotations

from collections.abc import Callable

import torch

from hololm.layers.base import Padding


def on_host(tensor: torch.Tensor) -> bool:
    """True where reading a tensor's values costs nothing (no device to wait for)."""
    return tensor.device.type == "cpu"


def require(ok: torch.Tensor, error: type[Exception], message: Callable[[], str]) -> None:
    """Raise `error(message())` unless every element of `ok` is true. On the CPU the check
    reads the values; on an accelerator it is an asynchronous device assertion, so a training
    step or a decoded token never waits for the device to answer a check (and torch.compile
    sees no graph break). There a failure surfaces as a device-side assertion at the next
    synchronisation, without the message."""
    if on_host(ok):
        if not bool(ok.all()):
            raise error(message())
    else:
        torch._assert_async(ok.all(), message.__doc__ or "hololm input check failed")


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

    def message() -> str:
        """input_ids out of range [0, vocab_size)"""
        return (f"input_ids must lie in [0, {vocab_size}) (vocab_size); got values in "
                f"[{input_ids.min().item()}, {input_ids.max().item()}]")

    require((input_ids >= 0) & (input_ids < vocab_size), ValueError, message)
    return input_ids


def validate_attention_mask(attention_mask, input_ids: torch.Tensor, past: int) -> None:
    """A [batch, seq_len] or [batch, past + seq_len] tensor of 0 (padding) and 1 (real token)."""
    if attention_mask is None:
        return
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.dim() != 2:
        raise ValueError("attention_mask must be a [batch, seq_len] tensor")
    B, T = input_ids.shape
    if attention_mask.shape[0] != B or attention_mask.shape[1] not in (T, past + T):
        raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, expected "
                         f"({B}, {T}) or ({B}, {past + T})")
    if attention_mask.is_complex():
        raise TypeError(f"attention_mask must hold 0 and 1, got a {attention_mask.dtype} tensor")

    def message() -> str:
        """attention_mask must hold only 0 and 1"""
        return "attention_mask must hold only 0 (padding) and 1 (real token)"

    require((attention_mask == 0) | (attention_mask == 1), ValueError, message)


def padding_of(attention_mask: torch.Tensor | None, past_valid: torch.Tensor | None,
               past: int, T: int) -> Padding | None:
    """The `Padding` of a chunk of T tokens after `past` cached ones, or None when no token of
    the sequence so far is padding. `past_valid` [B, past]: the cache's record of which cached
    tokens were real (None: all). A mask of past + T columns must agree with that record.

    Padding is supported at the start (left) and end (right) of a row: each row's real tokens
    must be contiguous, since a short convolution cannot skip a hole between real tokens."""
    if attention_mask is None and past_valid is None:
        return None
    device = (attention_mask if attention_mask is not None else past_valid).device
    B = (attention_mask if attention_mask is not None else past_valid).shape[0]
    keep = torch.ones(B, T, dtype=torch.bool, device=device) if attention_mask is None \
        else attention_mask[:, -T:] != 0  # [B, T]
    if past_valid is None:
        if on_host(keep) and bool(keep.all()):
            return None  # free to know on the CPU; on a GPU the masked path costs no sync
        past_valid = torch.ones(B, past, dtype=torch.bool, device=device)
    if attention_mask is not None and attention_mask.shape[1] == past + T and past:
        def disagree() -> str:
            """attention_mask disagrees with the padding the cache saw"""
            return ("attention_mask's first columns disagree with the padding of the tokens "
                    "already in the cache: pass the mask of the whole sequence, or of the new "
                    "tokens only")
        require((attention_mask[:, :past] != 0) == past_valid, ValueError, disagree)
    keys = torch.cat([past_valid, keep], dim=1)  # [B, past + T]

    def holes() -> str:
        """attention_mask has padding between real tokens"""
        row = int(((keys[:, 1:] & ~keys[:, :-1]).sum(1) + keys[:, 0] > 1).nonzero()[0, 0])
        return (f"attention_mask row {row} has padding between real tokens: pad on the left "
                f"(for generation) or on the right (for training), not in between")

    starts = (keys[:, 1:] & ~keys[:, :-1]).sum(1) + keys[:, 0]  # runs of real tokens per row
    require(starts <= 1, ValueError, holes)
    before = past_valid.sum(1, keepdim=True)  # [B, 1]: real tokens already seen
    positions = (before + keep.cumsum(1) - 1).clamp(min=0)  # [B, T]
    return Padding(keep=keep, keys=keys, positions=positions)


def validate_position_ids(position_ids, input_ids: torch.Tensor) -> torch.Tensor | None:
    """position_ids [B, T] or [1, T] (one row for every row), integers >= 0: the index of each
    token in its document, restarting at 0 where a packed document begins (Hugging Face's
    packed-sequence convention). Returns them as [B, T] long."""
    if position_ids is None:
        return None
    if not isinstance(position_ids, torch.Tensor):
        raise TypeError(f"position_ids must be a torch.Tensor, got {type(position_ids).__name__}")
    if position_ids.is_floating_point() or position_ids.is_complex() \
            or position_ids.dtype == torch.bool:
        raise TypeError(f"position_ids must be an integer tensor (torch.long), got "
                        f"{position_ids.dtype}")
    B, T = input_ids.shape
    if position_ids.dim() != 2 or position_ids.shape[1] != T or position_ids.shape[0] not in (1, B):
        raise ValueError(f"position_ids must have shape ({B}, {T}) or (1, {T}) like input_ids, "
                         f"got {tuple(position_ids.shape)}")

    def message() -> str:
        """position_ids must be >= 0"""
        return f"position_ids must be >= 0, got {position_ids.min().item()}"

    require(position_ids >= 0, ValueError, message)
    return position_ids.to(device=input_ids.device, dtype=torch.long).expand(B, T)


def documents_of(pad: Padding | None, position_ids: torch.Tensor | None,
                 past_documents: torch.Tensor | None, past: int, T: int
                 ) -> Padding | None:
    """`pad` (the padding, or None) with the packed documents that `position_ids` [B, T] mark
    (a 0 starts a document; a real token after a real token is either 0 or one more than it).
    `past_documents` [B, past]: the cache's record of the documents so far (None: one, or
    none seen yet). Without a start anywhere, contiguous positions and no record, None changes:
    the plain path runs (on the CPU, where checking costs nothing)."""
    if position_ids is None:
        if past_documents is not None:
            raise ValueError("this cache holds packed documents (it was filled with "
                             "position_ids): pass position_ids with every later call too")
        return pad
    B = position_ids.shape[0]
    device = position_ids.device
    keep = pad.keep if pad is not None else torch.ones(B, T, dtype=torch.bool, device=device)
    plain = torch.arange(past, past + T, device=device)
    if pad is None and past_documents is None and on_host(position_ids) \
            and bool((position_ids == plain).all()):
        return None  # one document per row, positions as the cache counts them
    steps = position_ids[:, 1:]
    follows = (steps == 0) | (steps == position_ids[:, :-1] + 1) | ~(keep[:, 1:] & keep[:, :-1])

    def message() -> str:
        """position_ids must count up by one within a document"""
        row, col = (~follows).nonzero()[0].tolist()
        return (f"position_ids must count up by one within a document and restart at 0 where "
                f"one begins; row {row} goes from {position_ids[row, col].item()} to "
                f"{position_ids[row, col + 1].item()} at token {col + 1}")

    require(follows, ValueError, message)
    starts = (position_ids == 0) & keep  # [B, T]
    if past_documents is None:
        past_documents = torch.zeros(B, past, dtype=torch.long, device=device)
    last = past_documents[:, -1:] if past else torch.zeros(B, 1, dtype=torch.long, device=device)
    documents = torch.cat([past_documents, last + starts.long().cumsum(1)], dim=1)
    positions = torch.where(keep, position_ids, 0)
    keys = pad.keys if pad is not None else torch.ones(B, past + T, dtype=torch.bool,
                                                      device=device)
    return Padding(keep=keep, keys=keys, positions=positions, starts=starts, documents=documents,
                   padded=pad is not None)


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
    ok = (labels == ignore_index) | ((labels >= 0) & (labels < vocab_size))

    def message() -> str:
        """labels out of range [0, vocab_size)"""
        return (f"labels must lie in [0, {vocab_size}) (vocab_size) or be {ignore_index} "
                f"(ignored); got {labels[~ok][0].item()}")

    require(ok, ValueError, message)


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
