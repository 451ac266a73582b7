"""Configurations: one typed `PretrainedConfig` dataclass per family over shared backbone fields.

Every family describes the one backbone (`hololm.models.backbone`): token embeddings (rotated by
position with `rotate_embeddings`), a stack of pre-norm blocks whose kinds `mixer_types` lists,
and a final norm. By default the blocks are the family's memory with softmax attention where
`hybrid_ratio` puts it (layers i with (i + 1) % hybrid_ratio == 0; 0 = none). Each config keeps
its original project's defaults; `hololm.models.registry` names what a family name means.

The original projects' spellings (`dim`, `n_layers`, `n_heads`, `max_seq_len`, `num_heads`,
`embed_dim`, `layers`, `depth`, `tie_weights`) and the layer kinds of older
checkpoints ("phasor", "matrix") are translated in `_translate`, the one place that does it.
"""

from __future__ import annotations

from dataclasses import fields
from typing import ClassVar

from transformers import PretrainedConfig

LAYER_KINDS = ("holo", "long", "hologpt", "hsn", "attention")  # the registry's families
OLD_KINDS = {"phasor": "holo", "matrix": "hologpt"}  # layer kinds of older checkpoints
MLP_KINDS = ("swiglu", "gelu", "gated_gelu")
NORM_KINDS = ("layernorm", "rmsnorm")

# the original projects' spelling -> the field it means (unless a config has a field of that
# name: HoloSpectralNet's max_seq_len is its gate's filter length)
SPELLINGS = {"dim": "hidden_size", "embed_dim": "hidden_size", "n_layers": "num_hidden_layers",
             "layers": "num_hidden_layers", "depth": "num_hidden_layers",
             "n_heads": "num_attention_heads", "num_heads": "num_attention_heads",
             "max_seq_len": "max_position_embeddings", "tie_weights": "tie_word_embeddings"}


def hybrid_mixer_types(n_layers: int, mixer: str, hybrid_ratio: int) -> list[str]:
    return ["attention" if hybrid_ratio > 0 and (i + 1) % hybrid_ratio == 0 else mixer
            for i in range(n_layers)]


def _positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _translate(config: HoloLMConfig, kwargs: dict) -> None:
    """Set the fields that `kwargs` gives in an original project's spelling (a field already set
    to another value than its default disagrees), and rename older checkpoints' layer kinds."""
    defaults = {f.name: f.default for f in fields(config)}
    for spelling, name in SPELLINGS.items():
        if spelling in kwargs and spelling not in defaults:
            value = kwargs.pop(spelling)
            if getattr(config, name) not in (defaults[name], value):
                raise ValueError(f"{name}={getattr(config, name)} and {spelling}={value} "
                                 "disagree; pass one of them")
            setattr(config, name, value)
    if config.mixer_types is not None:
        config.mixer_types = [OLD_KINDS.get(kind, kind) for kind in config.mixer_types]


class HoloLMConfig(PretrainedConfig):
    """Fields shared by every hololm family; a family sets `mixer`, its own fields and defaults."""

    mixer: ClassVar[str] = "attention"
    attribute_map: ClassVar[dict[str, str]] = {
        "dim": "hidden_size", "n_layers": "num_hidden_layers", "n_heads": "num_attention_heads",
        "num_heads": "num_attention_heads", "max_seq_len": "max_position_embeddings"}

    vocab_size: int = 32000  #: tokens of the embedding and the LM head
    hidden_size: int = 1024  #: model width d
    num_hidden_layers: int = 12  #: blocks in the stack
    num_attention_heads: int | None = 16  #: heads of the attention and memory layers
    max_position_embeddings: int = 131072  #: longest context the model is meant for
    hybrid_ratio: int = 8  #: softmax attention at layers i with (i + 1) % hybrid_ratio == 0
    mixer_types: list[str] | None = None  #: each layer's kind (None: from hybrid_ratio)
    mlp_type: str = "swiglu"  #: the blocks' MLP, one of MLP_KINDS
    expansion_ratio: float = 8 / 3  #: MLP width / d (SwiGLU rounds up to a multiple of 256)
    norm_type: str = "rmsnorm"  #: the blocks' and the final norm, one of NORM_KINDS
    norm_eps: float = 1e-5  #: epsilon of every norm
    rope_theta: float = 10000.0  #: RoPE base of the attention layers and rotated embeddings
    rotate_embeddings: bool = False  #: rotate the token embeddings by position (RoPE)
    initializer_range: float = 0.02  #: std of the normal init of Linear and Embedding weights
    use_cache: bool = True  #: return a HoloCache by default
    tie_word_embeddings: bool = True  #: the LM head shares the embedding matrix

    def __post_init__(self, **kwargs):
        _translate(self, kwargs)
        if self.mixer_types is None:
            self.mixer_types = hybrid_mixer_types(self.num_hidden_layers, self.mixer,
                                                  self.hybrid_ratio)
        super().__post_init__(**kwargs)
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
            if kind not in LAYER_KINDS:
                raise ValueError(f"unknown layer type {kind!r}; choose from {LAYER_KINDS}")
        if self.mlp_type not in MLP_KINDS:
            raise ValueError(f"unknown mlp_type {self.mlp_type!r}; choose from {MLP_KINDS}")
        if self.norm_type not in NORM_KINDS:
            raise ValueError(f"unknown norm_type {self.norm_type!r}; choose from {NORM_KINDS}")
        if set(self.mixer_types) != {"hsn"} and self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by "
                             f"num_attention_heads ({self.num_attention_heads})")
        if self.rotate_embeddings and self.hidden_size % 2:
            raise ValueError(f"hidden_size must be even to rotate the embeddings (RoPE rotates "
                             f"pairs), got {self.hidden_size}")


class HoloConfig(HoloLMConfig):
    """Holo-Transformer: phasor holographic memory layers ("LongAttention"),
    `hd_dim` complex channels split over the heads, a GELU MLP after each ("denoising"), and a
    softmax-attention layer every `hybrid_ratio` layers (default 8)."""

    model_type = "holo"
    mixer: ClassVar[str] = "holo"

    hd_dim: int = 2048  #: complex channels of the phasor memory, split over the heads
    phasor_seed: int = 0  #: seed of the random Fourier position frequencies
    multi_scale: bool = False  #: per-head frequency scales
    use_position: bool = True  #: bind keys to position phasors
    dual_path: bool = False  #: add the associative path with one-step-shifted keys
    key_conv_size: int = 4  #: causal conv over the keys' inputs (1: keys from one token)
    learned_query_offset: bool = False  #: learned positional offset of the query phase
    output_mode: str = "complex"  #: read out [Re, Im] ("complex") or Re only ("real")
    conv_targets: str = "k"  #: which of q, k, v read the short conv (Holo-Transformer: "k")
    num_copies: int = 1  #: memories under permuted key / query phases, read as their mean
    learned_decay: bool = False  #: a learned per-head decay of the memory (Holo-Transformer: none)
    mlp_type: str = "gelu"
    expansion_ratio: float = 4.0
    norm_type: str = "layernorm"

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
    mixer: ClassVar[str] = "long"

    vocab_size: int = 50304
    hidden_size: int = 768
    num_attention_heads: int | None = 12
    hybrid_ratio: int = 4
    gate_init_bias: float = 0.0  #: bias of the input gate i_t
    conv_size: int = 4  #: taps of the causal depthwise conv
    decay_min: float = 0.5  #: initial decay of the fastest head
    decay_max: float = 0.9999  #: initial decay of the slowest head


class HoloGPTConfig(HoloLMConfig):
    """HoloGPT: gated outer-product matrix memories (`matrix_dim` x `matrix_dim` per
    head; heads default to hidden_size // matrix_dim), each followed by a gated GELU FFN
    (`FastHoloBlock`), LayerNorm, no attention unless `hybrid_ratio` asks for it."""

    model_type = "hologpt"
    mixer: ClassVar[str] = "hologpt"
    attribute_map: ClassVar[dict[str, str]] = {**HoloLMConfig.attribute_map,
                                               "embed_dim": "hidden_size"}

    vocab_size: int = 50257
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int | None = None  #: memories per layer (None: d // matrix_dim)
    hybrid_ratio: int = 0
    matrix_dim: int = 64  #: side of each head's square memory
    forget_bias: float = 2.0  #: initial bias of the forget gate f_t
    write_bias: float = -2.0  #: initial bias of the write gate w_t
    read_before_write: bool = False  #: read M_{t-1} (HoloGPT's code) instead of M_t (its text)
    conv_size: int = 0  #: taps of the causal conv on q, k, v (0: none, HoloGPT's setting)
    update: str = "additive"  #: "additive" (HoloGPT) or "delta" (the gated delta rule)
    mlp_type: str = "gated_gelu"
    expansion_ratio: float = 4.0
    norm_type: str = "layernorm"

    def __post_init__(self, **kwargs):
        _translate(self, kwargs)  # the heads may be given as n_heads / num_heads
        _positive_int("matrix_dim", self.matrix_dim)
        if self.num_attention_heads is None:
            self.num_attention_heads = max(1, self.hidden_size // self.matrix_dim)
        super().__post_init__(**kwargs)


class HoloSpectralConfig(HoloLMConfig):
    """HoloSpectralNet: embeddings rotated by a parameter-free RoPE, blocks of holographic mixer,
    causal spectral gate and lite channel mix, a final LayerNorm, tied head. `max_seq_len` is
    the spectral gate's filter length (not a context limit), `rank` the channel mix's, `decay`
    (None or in (0, 1)) the holographic bundle's forgetting factor."""

    model_type = "hsn"
    mixer: ClassVar[str] = "hsn"
    attribute_map: ClassVar[dict[str, str]] = {
        "dim": "hidden_size", "depth": "num_hidden_layers", "tie_weights": "tie_word_embeddings"}

    hidden_size: int = 256
    num_hidden_layers: int = 6
    hybrid_ratio: int = 0
    max_seq_len: int = 512  #: taps of the spectral gate's causal filter
    rank: int = 32  #: bottleneck of the lite channel mix
    decay: float | None = None  #: forgetting factor of the hologram (None: a plain sum)
    conv_size: int = 0  #: taps of a causal conv on the mixer's input (0: none, the original)
    norm_type: str = "layernorm"
    rotate_embeddings: bool = True

    def validate_fields(self) -> None:
        super().validate_fields()
        _positive_int("max_seq_len", self.max_seq_len)
        _positive_int("rank", self.rank)
        if self.decay is not None and not (isinstance(self.decay, float | int)
                                           and 0.0 < self.decay < 1.0):
            raise ValueError(f"decay must be None or a number in (0, 1), got {self.decay!r}")
