"""State-carrying training (`--carry_state`): each batch row reads a contiguous stream
(`StreamSampler`), and each window starts from the memory the previous window of that stream
ended with — detached, so backpropagation stays within one window (truncated BPTT) while the
model learns to use a memory of everything before. A memory costs the same whatever the length
read, so a recurrent model trains over documents far longer than seq_len at the memory cost of
one window; attention's cache would grow without bound, so models with attention layers are
refused.

With document resets on, a window's positions continue its document (`document_positions` with
the carried position of the next token) and every memory still starts afresh where a document
begins; off, positions count from the start of the stream."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hololm.data.packing import IGNORE_INDEX, document_positions
from hololm.errors import ConfigError
from hololm.models.cache import HoloCache


def is_carriable(model: torch.nn.Module) -> bool:
    """Whether `check_carriable` accepts the model."""
    kinds = getattr(model.config, "mixer_types", None)
    return kinds is not None and "attention" not in kinds


def check_carriable(model: torch.nn.Module, model_type: str) -> None:
    """A model whose every layer is a constant-size memory: no attention layer, no baseline."""
    kinds = getattr(model.config, "mixer_types", None)
    if kinds is None:
        raise ConfigError(f"--carry_state needs a hololm model; {model_type} is a Hugging Face "
                          f"baseline without a carried memory")
    if "attention" in kinds:
        raise ConfigError(f"--carry_state needs a model without attention layers (their cache "
                          f"grows with every window); {model_type} has attention at layers "
                          f"{[i for i, k in enumerate(kinds) if k == 'attention']}: set "
                          f"hybrid_ratio 0 in --model_overrides or pick a pure memory")


class CarriedStates:
    """Per micro-batch slot (grad_accum_steps of them): the per-layer states each row ends its
    window with, and the position in its document of the row's next token."""

    def __init__(self, grad_accum_steps: int, n_layers: int, eos_token_id: int | None):
        self.n_layers, self.eos_token_id = n_layers, eos_token_id  # None: no document resets
        self.states: list[list[dict[str, torch.Tensor] | None] | None] = [None] * grad_accum_steps
        self.next_position: list[torch.Tensor | None] = [None] * grad_accum_steps

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor], slot: int,
             device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """`token_loss` of one micro-batch read from the slot's carried states, which it then
        replaces with the window's final states (detached)."""
        input_ids = batch["input_ids"].to(device)
        labels = batch["labels"][:, 1:].to(device)
        B, T = input_ids.shape
        continues = bool(batch["continues"].all())  # one window index per micro-batch
        states = self.states[slot] if continues else None
        first = self.next_position[slot] if continues and states is not None \
            else torch.zeros(B, dtype=torch.long, device=device)
        if self.eos_token_id is None:
            position_ids = first[:, None] + torch.arange(T, device=device)
        else:
            position_ids = document_positions(input_ids, self.eos_token_id, first)
        cache = HoloCache(self.n_layers)
        if states is not None:
            # the offset makes the model read the positions given (a restart at 0 included)
            # instead of taking the fresh cache's 0, 1, ... for granted
            cache.states, cache.seen_tokens = list(states), int(batch["offset"][0])
        logits = model(input_ids=input_ids, position_ids=position_ids, cache=cache,
                       use_cache=True).logits[:, :-1]
        self.states[slot] = [None if s is None else {k: v.detach() for k, v in s.items()}
                             for s in cache.states]
        after_eos = input_ids[:, -1] == self.eos_token_id if self.eos_token_id is not None \
            else torch.zeros(B, dtype=torch.bool, device=device)
        self.next_position[slot] = torch.where(after_eos, 0, position_ids[:, -1] + 1)
        loss_sum = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(),
                                   ignore_index=IGNORE_INDEX, reduction="sum")
        return loss_sum, (labels != IGNORE_INDEX).sum()

    def to_tensors(self, rank: int) -> dict[str, torch.Tensor]:
        """Named CPU tensors for a checkpoint: `rank{r}.slot{s}.layer{l}.{name}` and
        `rank{r}.slot{s}.next_position`."""
        named = {}
        for slot, states in enumerate(self.states):
            if states is None:
                continue
            for layer, state in enumerate(states):
                for name, value in (state or {}).items():
                    named[f"rank{rank}.slot{slot}.layer{layer}.{name}"] = value.cpu()
            named[f"rank{rank}.slot{slot}.next_position"] = self.next_position[slot].cpu()
        return named

    def load(self, named: dict[str, torch.Tensor], rank: int, device: torch.device) -> None:
        """Inverse of `to_tensors` for this rank's slots."""
        for slot in range(len(self.states)):
            prefix = f"rank{rank}.slot{slot}."
            if prefix + "next_position" not in named:
                continue
            states: list[dict[str, torch.Tensor] | None] = [None] * self.n_layers
            for key, value in named.items():
                if key.startswith(prefix + "layer"):
                    layer, name = key[len(prefix) + len("layer"):].split(".", 1)
                    states[int(layer)] = {**(states[int(layer)] or {}), name: value.to(device)}
            self.states[slot] = states
            self.next_position[slot] = named[prefix + "next_position"].to(device)
