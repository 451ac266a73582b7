"""Channel MLPs of the blocks. Output projections are named `o_proj` so the backbone can scale
their init by 1/sqrt(2·n_layers) (GPT-2 / seed convention for residual branches)."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from hololm.layers.base import check_activations


def swiglu_width(d_model: int, expansion_ratio: float, multiple_of: int = 256) -> int:
    """ceil(d·ratio) rounded up to a multiple of `multiple_of` (LongConfig / Llama sizing)."""
    return multiple_of * math.ceil(math.ceil(d_model * expansion_ratio) / multiple_of)


class GatedMLP(nn.Module):
    """o_proj(act(W_g x) ⊙ W_u x): SwiGLU with SiLU, HoloGPT's gated FFN with GELU."""

    def __init__(self, d_model: int, hidden: int,
                 activation: Callable[[torch.Tensor], torch.Tensor] = F.silu):
        super().__init__()
        self.activation = activation
        self.gate_up = nn.Linear(d_model, 2 * hidden, bias=False)
        self.o_proj = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_activations(x, self.gate_up.in_features, self.gate_up.weight)
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.o_proj(self.activation(gate) * up)


class GeluMLP(nn.Module):
    """o_proj(GELU(W x)): the classic Transformer MLP."""

    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.up = nn.Linear(d_model, hidden)
        self.o_proj = nn.Linear(hidden, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_activations(x, self.up.in_features, self.up.weight)
        return self.o_proj(F.gelu(self.up(x)))


MLPS = {
    "swiglu": partial(GatedMLP, activation=F.silu),
    "gelu": GeluMLP,
    "gated_gelu": partial(GatedMLP, activation=F.gelu),
}
