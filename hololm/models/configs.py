"""Configurations: `PretrainedConfig` subclasses that accept the seeds' spellings.

`HoloConfig` (Holo-Transformer) takes `dim, n_layers, n_heads, hd_dim, max_seq_len` or the HF
names `hidden_size, num_hidden_layers, num_attention_heads, max_position_embeddings`;
`LongConfig` (LongAttention V5) also takes `num_heads`. Both describe one backbone: a stack of
pre-norm blocks whose token mixer is the family's memory, with softmax-attention layers where
`hybrid_ratio` (attention at layers i with (i + 1) % hybrid_ratio == 0; 0 = none) or an explicit
`mixer_types` list puts them.
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

MIXER_KINDS = ("phasor", "long", "matrix", "attention")
MLP_KINDS = ("swiglu", "gelu", "gated_gelu")
NORM_KINDS = ("layernorm", "rmsnorm")

# seed spelling -> HF spelling
ALIASES = {"dim": "hidden_size", "embed_dim": "hidden_size", "n_layers": "num_hidden_layers",
           "layers": "num_hidden_layers", "n_heads": "num_attention_heads",
           "num_heads": "num_attention_heads", "max_seq_len": "max_position_embeddings"}

SHARED_DEFAULTS: dict[str, Any] = {
    "vocab_size": 32000,
    "hidden_size": 1024,
    "num_hidden_layers": 12,
    "num_attention_heads": 16,
    "max_position_embeddings": 131072,
    "hybrid_ratio": 8,
    "mlp_type": "swiglu",
    "expansion_ratio": 8 / 3,
    "norm_type": "rmsnorm",
    "norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "initializer_range": 0.02,
    "use_cache": True,
}


def hybrid_mixer_types(n_layers: int, mixer: str, hybrid_ratio: int) -> list[str]:
    return ["attention" if hybrid_ratio > 0 and (i + 1) % hybrid_ratio == 0 else mixer
            for i in range(n_layers)]


def resolve_aliases(kwargs: dict, aliases: dict[str, str]) -> dict:
    """Rename seed spellings to HF names in `kwargs`; refuse two different values for one field."""
    for alias, name in aliases.items():
        if alias in kwargs:
            value = kwargs.pop(alias)
            if name in kwargs and kwargs[name] != value:
                raise ValueError(f"{name}={kwargs[name]} and {alias}={value} disagree; "
                                 "pass one of them")
            kwargs[name] = value
    return kwargs


def _positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


class HoloLMConfig(PretrainedConfig):
    """Fields shared by every hololm family; a family sets `mixer` and its `defaults`."""

    mixer = "attention"
    defaults = {}
    attribute_map = {"dim": "hidden_size", "n_layers": "num_hidden_layers",
                     "n_heads": "num_attention_heads", "max_seq_len": "max_position_embeddings"}

    def __init__(self, mixer_types: list[str] | None = None, tie_word_embeddings: bool = True,
                 **kwargs):
        resolve_aliases(kwargs, ALIASES)
        for name, default in {**SHARED_DEFAULTS, **self.defaults}.items():
            setattr(self, name, kwargs.pop(name, default))
        self.mixer_types = (list(mixer_types) if mixer_types is not None else
                            hybrid_mixer_types(self.num_hidden_layers, self.mixer,
                                               self.hybrid_ratio))
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)
        self.validate_fields()

    def validate_fields(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "max_position_embeddings"):
            _positive_int(name, getattr(self, name))
        if isinstance(self.hybrid_ratio, bool) or not isinstance(self.hybrid_ratio, int) \
                or self.hybrid_ratio < 0:
            raise ValueError(f"hybrid_ratio must be an int >= 0, got {self.hybrid_ratio!r}")
        if len(self.mixer_types) != self.num_hidden_layers:
            raise ValueError(f"mixer_types has {len(self.mixer_types)} entries but "
                             f"num_hidden_layers={self.num_hidden_layers}")
        for kind in self.mixer_types:
            if kind not in MIXER_KINDS:
                raise ValueError(f"unknown layer type {kind!r}; choose from {MIXER_KINDS}")
        if self.mlp_type not in MLP_KINDS:
            raise ValueError(f"unknown mlp_type {self.mlp_type!r}; choose from {MLP_KINDS}")
        if self.norm_type not in NORM_KINDS:
            raise ValueError(f"unknown norm_type {self.norm_type!r}; choose from {NORM_KINDS}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by "
                             f"num_attention_heads ({self.num_attention_heads})")


class HoloConfig(HoloLMConfig):
    """Holo-Transformer: phasor holographic memory layers ("LongAttention"),
    `hd_dim` complex channels split over the heads, a GELU MLP after each ("denoising"), and a
    softmax-attention layer every `hybrid_ratio` layers (default 8)."""

    model_type = "holo"
    mixer = "phasor"
    defaults = {
        "hidden_size": 1024,
        "hd_dim": 2048,
        "phasor_seed": 0,
        "multi_scale": False,
        "use_position": True,
        "dual_path": False,
        "key_conv_size": 4,
        "learned_query_offset": False,
        "output_mode": "complex",
        "mlp_type": "gelu",
        "expansion_ratio": 4.0,
        "norm_type": "layernorm",
    }

    # PretrainedConfig turns every subclass into a dataclass, which would generate an __init__
    # that skips HoloLMConfig's; defining one keeps the alias and default handling.
    def __init__(self, **kwargs):
        super().__init__(**kwargs)

    def validate_fields(self) -> None:
        super().validate_fields()
        _positive_int("hd_dim", self.hd_dim)
        if self.hd_dim % self.num_attention_heads:
            raise ValueError(f"hd_dim ({self.hd_dim}) must be divisible by the number of heads "
                             f"({self.num_attention_heads})")
        if self.output_mode not in ("complex", "real"):
            raise ValueError(f"output_mode must be 'complex' or 'real', got {self.output_mode!r}")


class LongConfig(HoloLMConfig):
    """LongAttention V5: gated element-wise recurrence layers, SwiGLU MLPs of width
    ceil(d·expansion_ratio) rounded up to a multiple of 256, a RoPE attention anchor where
    (i + 1) % hybrid_ratio == 0, tied embeddings."""

    model_type = "long"
    mixer = "long"
    defaults = {
        "vocab_size": 50304,
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "hybrid_ratio": 4,
        "gate_init_bias": 0.0,
        "conv_size": 4,
        "decay_min": 0.5,
        "decay_max": 0.9999,
    }

    # PretrainedConfig turns every subclass into a dataclass, which would generate an __init__
    # that skips HoloLMConfig's; defining one keeps the alias and default handling.
    def __init__(self, **kwargs):
        super().__init__(**kwargs)

    @property
    def num_heads(self) -> int:
        return self.num_attention_heads


class HoloGPTConfig(HoloLMConfig):
    """HoloGPT: gated outer-product matrix memories (`matrix_dim` x `matrix_dim` per
    head; heads default to hidden_size // matrix_dim), each followed by a gated GELU FFN
    (`FastHoloBlock`), LayerNorm, no attention unless `hybrid_ratio` asks for it. Seed
    spellings: `embed_dim`, `layers`."""

    model_type = "hologpt"
    mixer = "matrix"
    defaults = {
        "vocab_size": 50257,
        "hidden_size": 256,
        "num_hidden_layers": 4,
        "hybrid_ratio": 0,
        "matrix_dim": 64,
        "forget_bias": 2.0,
        "write_bias": -2.0,
        "read_before_write": False,
        "mlp_type": "gated_gelu",
        "expansion_ratio": 4.0,
        "norm_type": "layernorm",
    }

    def __init__(self, **kwargs):
        if not {"num_attention_heads", "n_heads", "num_heads"} & kwargs.keys():
            hidden = kwargs.get("hidden_size", kwargs.get("embed_dim", kwargs.get(
                "dim", self.defaults["hidden_size"])))
            kwargs["num_attention_heads"] = max(
                1, hidden // kwargs.get("matrix_dim", self.defaults["matrix_dim"]))
        super().__init__(**kwargs)

    def validate_fields(self) -> None:
        super().validate_fields()
        _positive_int("matrix_dim", self.matrix_dim)
