"""The one list of model names: hololm's families, their variants, and the Hugging Face baselines.

`hololm train --model_type`, `get_model_and_tokenizer`, `hololm bench recall --models`,
`hololm bench speed --mixers / --models / --train_models` and the configs' `mixer_types` all take
these names. A family's name is also its layer kind in `mixer_types`, and means the pure memory
(no attention layers). A variant is a family with a few config fields set, one entry each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from hololm.layers.attention import CausalSelfAttention
from hololm.layers.long import LongAttentionV5
from hololm.layers.matrix import MatrixMemory
from hololm.layers.phasor import PhasorAttention
from hololm.layers.spectral import HoloSpectralBlock
from hololm.models.configs import HoloLMConfig
from hololm.models.modeling import (
    HoloForCausalLM,
    HoloGPTForCausalLM,
    HoloLMForCausalLM,
    HoloSpectralForCausalLM,
    LongForCausalLM,
)

# named sizes (width, depth, heads) shared by the families and the baselines
SIZES = {
    "tiny": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4},
    "small": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12},
    "medium": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16},
}
HSN_SIZES = {  # HoloSpectralNet's own table (its tiny / small / base), rank = dim / 8
    "tiny": {"hidden_size": 128, "num_hidden_layers": 4},
    "small": {"hidden_size": 256, "num_hidden_layers": 6},
    "medium": {"hidden_size": 512, "num_hidden_layers": 8},
}
BASELINES = ("llama", "gpt2", "mamba2")  # HF models built from configs, never downloaded


@dataclass(frozen=True)
class Family:
    name: str  # also its layer kind in `mixer_types`
    original: str  # the project it implements
    memory: str  # what its layers keep, in one line
    layer: type[nn.Module]  # the token mixer of its layers (hsn: the whole block)
    model: type[HoloLMForCausalLM]
    sizes: dict[str, dict[str, int]]
    width_fields: Callable[[int], dict]  # fields the name sets, at width d
    heads: bool = True  # False: its heads follow from the width (d // matrix_dim memories)
    seq_len_fields: tuple[str, ...] = ("max_position_embeddings",)  # set to the training length

    @property
    def config(self) -> type[HoloLMConfig]:
        return self.model.config_class


@dataclass(frozen=True)
class Variant:
    name: str
    family: str
    description: str
    overrides: dict = field(default_factory=dict)  # config fields
    attention_every: int = 0  # softmax attention at every n-th layer, and at least the last


FAMILIES = {f.name: f for f in (
    Family("holo", "Holo-Transformer", "phasor (FHRR) memory: values bound to random-Fourier "
           "position phasors in hd_dim = 2·d complex channels", PhasorAttention,
           HoloForCausalLM, SIZES, lambda d: {"hd_dim": 2 * d, "hybrid_ratio": 0}),
    Family("long", "LongAttention V5", "gated element-wise recurrence: one decaying vector per "
           "head", LongAttentionV5, LongForCausalLM, SIZES,
           lambda d: {"hybrid_ratio": 0}),
    Family("hologpt", "HoloGPT", "gated outer-product memory: a 64 x 64 matrix per 64 channels",
           MatrixMemory, HoloGPTForCausalLM,
           {name: {k: v for k, v in size.items() if k != "num_attention_heads"}
            for name, size in SIZES.items()},
           lambda d: {"matrix_dim": min(64, d)}, heads=False),
    Family("hsn", "HoloSpectralNet", "circular-convolution hologram (a running sum of bound "
           "tokens) plus a causal spectral gate over the last max_seq_len tokens",
           HoloSpectralBlock, HoloSpectralForCausalLM, HSN_SIZES,
           lambda d: {"rank": max(1, d // 8)},
           seq_len_fields=("max_position_embeddings", "max_seq_len")),
    Family("attention", "Transformer", "softmax attention with RoPE and a KV cache growing with "
           "context: the baseline in hololm's own backbone", CausalSelfAttention,
           HoloForCausalLM, SIZES, lambda d: {"hd_dim": 2 * d, "hybrid_ratio": 1}),
)}

VARIANTS = {v.name: v for v in (
    Variant("holo-hybrid", "holo", "Holo-Transformer's hybrid: softmax attention every 8th layer",
            attention_every=8),
    Variant("long-hybrid", "long", "LongAttention V5's hybrid: a RoPE attention anchor every 4th "
            "layer", attention_every=4),
    Variant("holo-noconv", "holo", "keys from the current token only (no short conv over the "
            "keys' inputs)", {"key_conv_size": 1}),
    Variant("holo-conv", "holo", "the short conv's output also feeds the queries and values",
            {"conv_targets": "qkv"}),
    Variant("holo-copies", "holo", "holo-conv with 4 memories under permuted key phases, read "
            "as their mean (Associative LSTM): 4x the state", {"conv_targets": "qkv",
                                                               "num_copies": 4}),
    Variant("holo-decay", "holo", "holo-conv with a learned per-head decay (forgetting over ~32 "
            "to ~4096 tokens)", {"conv_targets": "qkv", "learned_decay": True}),
    Variant("hsn-conv", "hsn", "a causal depthwise conv (4 taps, SiLU) on the mixer's input",
            {"conv_size": 4}),
    Variant("hologpt-conv", "hologpt", "a causal depthwise conv (4 taps, SiLU) on q, k and v",
            {"conv_size": 4}),
    Variant("hologpt-delta", "hologpt", "the short conv and the gated delta rule: a write "
            "replaces what its key held (write gate = beta, initial bias 0)",
            {"conv_size": 4, "update": "delta", "write_bias": 0.0}),
)}

MEMORIES = tuple(name for name in FAMILIES if name != "attention")
NAMES = (*FAMILIES, *VARIANTS, *BASELINES)


def family_of(name: str) -> tuple[Family, Variant | None]:
    """The family of a family or variant name, and the variant (None for a family)."""
    if name in VARIANTS:
        return FAMILIES[VARIANTS[name].family], VARIANTS[name]
    if name in FAMILIES:
        return FAMILIES[name], None
    raise ValueError(f"unknown model {name!r}; choose from {', '.join(NAMES)}")


def config_fields(name: str, fields: dict) -> dict:
    """The config fields of family or variant `name` given the shared ones (width, depth, ...;
    these win): what the family name and the variant mean, at that width and depth."""
    family, variant = family_of(name)
    named = {**family.width_fields(fields["hidden_size"]),
             **(variant.overrides if variant else {})}
    if variant and variant.attention_every and not {"mixer_types", "hybrid_ratio"} & fields.keys():
        every, n = variant.attention_every, fields["num_hidden_layers"]
        named["hybrid_ratio"] = every
        named["mixer_types"] = ["attention" if (i + 1) % every == 0 or (n < every and i == n - 1)
                                else family.name for i in range(n)]
    return {**named, **fields}


def matched_shape(name: str, hidden_size: int, num_layers: int, heads: int) -> dict:
    """Width, depth and heads for comparing models at one shape (a family whose heads follow
    from its width keeps them)."""
    shape = {"hidden_size": hidden_size, "num_hidden_layers": num_layers}
    if name in BASELINES or family_of(name)[0].heads:
        shape["num_attention_heads"] = heads
    return shape
