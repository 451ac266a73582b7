"""The candidates of `hololm bench lm` and their sizes: every registry name built at a matched
number of non-embedding parameters.

Non-embedding parameters are what the model spends on its layers: all parameters less the token
embedding, the LM head where it is not tied to it, and learned position tables (GPT-2's), whose
sizes follow from the vocabulary and the context rather than from the architecture.

`match_shape` picks each candidate's width and depth: at the profile's depth first, the width
(in steps of `width_step`, heads of `head_dim` channels) whose count is nearest the target; a
candidate that no width brings within the tolerance there (one layer of it is too coarse a step)
takes the nearest depth that does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from huggingface_hub.errors import StrictDataclassClassValidationError
from transformers import PreTrainedModel

from hololm.errors import ConfigError
from hololm.models.presets import build_model
from hololm.models.registry import NAMES, matched_shape

# left out by default: `attention` is the hololm backbone's own transformer (llama is the
# attention baseline), `holo-noconv` an ablation rather than an improvement
NOT_BY_DEFAULT = ("attention", "holo-noconv")
DEFAULT_MODELS = tuple(name for name in NAMES if name not in NOT_BY_DEFAULT)
TOLERANCE = 0.10  # a matched count lies within ±10 % of the target
# GPT-2's config defaults to dropout 0.1; no other candidate has dropout
NO_DROPOUT = {"gpt2": {"attn_pdrop": 0.0, "resid_pdrop": 0.0, "embd_pdrop": 0.0}}


@dataclass(frozen=True)
class Shape:
    """A candidate's matched size."""

    name: str
    hidden_size: int
    num_layers: int
    heads: int
    params: int  # all parameters
    non_embedding: int

    @property
    def overrides(self) -> dict:
        return {**matched_shape(self.name, self.hidden_size, self.num_layers, self.heads),
                **NO_DROPOUT.get(self.name, {})}

    def error(self, target: int) -> float:
        """Relative distance of the non-embedding count from `target`."""
        return self.non_embedding / target - 1


def check_models(names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        raise ConfigError(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(NAMES)}")
    return tuple(dict.fromkeys(names))


def non_embedding_params(model: PreTrainedModel) -> int:
    """Parameters less the token embedding, an untied LM head and learned position tables."""
    params = {id(p): p for p in model.parameters()}  # a tied weight once
    embedding = {id(model.get_input_embeddings().weight)}
    head = model.get_output_embeddings()
    if head is not None:
        embedding.add(id(head.weight))
    positions = getattr(getattr(model, "transformer", None), "wpe", None)  # GPT-2
    if positions is not None:
        embedding.add(id(positions.weight))
    return sum(p.numel() for key, p in params.items() if key not in embedding)


def build_candidate(shape: Shape, vocab_size: int, seq_len: int,
                    device: torch.device | str = "cpu") -> PreTrainedModel:
    """The model of `shape`, freshly initialised on `device`."""
    with torch.device(device):
        return build_model(shape.name, "tiny", vocab_size, seq_len, **shape.overrides)


def measure_shape(name: str, hidden_size: int, num_layers: int, head_dim: int,
                  vocab_size: int, seq_len: int) -> Shape | None:
    """The counts of one width and depth, on the meta device; None where the config refuses
    the width (not whole heads of `head_dim`, or Mamba-2's 64-wide heads not dividing it)."""
    if hidden_size % head_dim:
        return None  # whole heads only
    heads = hidden_size // head_dim
    shape = Shape(name, hidden_size, num_layers, heads, 0, 0)
    try:
        model = build_candidate(shape, vocab_size, seq_len, "meta")
    except (ValueError, StrictDataclassClassValidationError):  # HF configs check this way
        return None
    total = sum(p.numel() for p in model.parameters())
    return Shape(name, hidden_size, num_layers, heads, total, non_embedding_params(model))


def match_shape(name: str, target: int, *, vocab_size: int, seq_len: int, depth: int,
                width_step: int, head_dim: int, tolerance: float = TOLERANCE) -> Shape:
    """Width and depth giving `name` about `target` non-embedding parameters: the profile's
    `depth` if a width there comes within `tolerance`, else the nearest depth that does (ties:
    the shallower; at most 3·depth); at that depth the width nearest the target. ConfigError if
    none does."""
    for offset in range(2 * depth + 1):
        for layers in dict.fromkeys((depth - offset, depth + offset)):
            if layers >= 1:
                best = _nearest_width(name, target, layers, width_step, head_dim, vocab_size,
                                      seq_len)
                if best is not None and abs(best.error(target)) <= tolerance:
                    return best
    raise ConfigError(f"{name}: no width in steps of {width_step} and depth up to "
                      f"{3 * depth} comes within {tolerance:.0%} of {target:,} non-embedding "
                      f"parameters; choose another target or depth")


def _nearest_width(name: str, target: int, layers: int, width_step: int, head_dim: int,
                   vocab_size: int, seq_len: int) -> Shape | None:
    """At `layers` layers, the width whose count is nearest `target` (counts grow with width,
    so the search stops at the first width past it)."""
    best, best_error = None, math.inf
    width = width_step
    while True:
        shape = measure_shape(name, width, layers, head_dim, vocab_size, seq_len)
        if shape is not None:
            if abs(shape.error(target)) < best_error:
                best, best_error = shape, abs(shape.error(target))
            if shape.non_embedding > target:
                return best
        width += width_step
        if width > 64 * width_step:  # far past any sensible width: the target is unreachable
            return best
