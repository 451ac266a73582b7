"""HoloSpectralNet: embeddings rotated by a parameter-free RoPE, a stack of
`HoloSpectralBlock`s (holographic mixer, causal spectral gate, lite channel mix), a final
LayerNorm and an LM head tied to the embeddings.

One implementation serves both front doors:
- `HoloSpectralForCausalLM(HoloSpectralConfig)`: the Hugging Face model (`.loss`, `.logits`,
  a `HoloCache` for exact prefill + decoding, `generate()`, `save_pretrained` /
  `from_pretrained`). It reuses `HoloLMForCausalLM`'s forward (input checks, cache, loss) over
  the HSN stack (the shared `Backbone` with HSN blocks and RoPE on the embeddings).
- `HoloSpectralNet(vocab_size, dim, depth, max_seq_len, rank, tie_weights)`: the seed's class, the
  same model built from keyword arguments; `model(input_ids)` returns the logits tensor [B, T, V]
  (the full output with `return_dict=True`, which is what `generate()` asks for).

`max_seq_len` is the spectral gate's filter length, not a context limit: any length works (the
gates see the last max_seq_len tokens, the holograms everything), so the config deliberately has
no `max_position_embeddings`. Presets `hsn_tiny / hsn_small / hsn_base` use the seed's sizes.
"""

from __future__ import annotations

from torch import nn
from transformers import PretrainedConfig

from hololm.layers.rotary import RotaryEmbedding
from hololm.layers.spectral import HoloSpectralBlock
from hololm.models.backbone import Backbone
from hololm.models.configs import resolve_aliases
from hololm.models.modeling import HoloLMForCausalLM, HoloLMPreTrainedModel, ReturnsLogits

# seed spelling -> HF spelling
ALIASES = {"dim": "hidden_size", "depth": "num_hidden_layers", "tie_weights": "tie_word_embeddings"}

DEFAULTS = {
    "vocab_size": 32000,
    "hidden_size": 256,
    "num_hidden_layers": 6,
    "max_seq_len": 512,
    "rank": 32,
    "decay": None,
    "norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "initializer_range": 0.02,
    "use_cache": True,
}

# name -> (dim, depth, rank), the seed's table
PRESETS = {"tiny": (128, 4, 16), "small": (256, 6, 32), "base": (512, 8, 64)}


class HoloSpectralConfig(PretrainedConfig):
    """HoloSpectralNet config. Accepts the seed's spellings `dim`, `depth`, `tie_weights` or the
    HF names `hidden_size`, `num_hidden_layers`, `tie_word_embeddings`; `max_seq_len` is the
    spectral gate's filter length, `rank` the channel mix's, `decay` (None or in (0, 1)) the
    holographic bundle's forgetting factor."""

    model_type = "hsn"
    attribute_map = {"dim": "hidden_size", "depth": "num_hidden_layers",
                     "tie_weights": "tie_word_embeddings"}

    def __init__(self, **kwargs):
        resolve_aliases(kwargs, ALIASES)
        for name, default in DEFAULTS.items():
            setattr(self, name, kwargs.pop(name, default))
        kwargs.setdefault("tie_word_embeddings", True)
        super().__init__(**kwargs)
        self.validate_fields()

    def validate_fields(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "max_seq_len", "rank"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.hidden_size % 2:
            raise ValueError(f"hidden_size must be even (RoPE rotates pairs), got "
                             f"{self.hidden_size}")
        if self.decay is not None and not (isinstance(self.decay, float | int)
                                           and 0.0 < self.decay < 1.0):
            raise ValueError(f"decay must be None or a number in (0, 1), got {self.decay!r}")


def hsn_backbone(config: HoloSpectralConfig) -> Backbone:
    """Embeddings rotated by RoPE, HoloSpectralBlocks, a final LayerNorm."""
    d = config.hidden_size
    layers = [HoloSpectralBlock(d, config.max_seq_len, config.rank, decay=config.decay,
                                norm_eps=config.norm_eps) for _ in range(config.num_hidden_layers)]
    return Backbone(config, layers=layers, norm=nn.LayerNorm(d, eps=config.norm_eps),
                    rotary=RotaryEmbedding(d, base=config.rope_theta))


class HoloSpectralForCausalLM(HoloLMForCausalLM):
    """HoloSpectralNet causal LM: `model(input_ids, labels=...)` gives `.loss` and `.logits`;
    its cache is a `HoloCache` of per-layer {"hologram", "buffer"} states."""

    config_class = HoloSpectralConfig
    _no_split_modules = ["HoloSpectralBlock"]

    def __init__(self, config: HoloSpectralConfig):
        # HoloLMForCausalLM.__init__ would build the shared Backbone: go to PreTrainedModel's
        HoloLMPreTrainedModel.__init__(self, config)
        self.model = hsn_backbone(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def state_bytes(self, batch_size: int, context_len: int) -> int:
        """Bytes of the generation cache: holograms and gate buffers, constant in context."""
        return sum(layer.state_bytes(batch_size, context_len) for layer in self.model.layers)

    def count_parameters(self) -> int:
        """Trainable parameters, tied embedding / head counted once."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


class HoloSpectralNet(ReturnsLogits, HoloSpectralForCausalLM):
    """Seed 004's front door: `HoloSpectralNet(vocab_size=32000, dim=256, depth=6,
    max_seq_len=512, rank=32, tie_weights=True)(input_ids)` returns logits [B, T, V]. Extra
    keywords go to `HoloSpectralConfig`; a config may be passed instead (as `from_pretrained`
    does)."""

    def __init__(self, vocab_size: int | HoloSpectralConfig = 32000, dim: int = 256,
                 depth: int = 6, max_seq_len: int = 512, rank: int = 32,
                 tie_weights: bool = True, **config_kwargs):
        if isinstance(vocab_size, HoloSpectralConfig):
            config = vocab_size
        else:
            config = HoloSpectralConfig(vocab_size=vocab_size, dim=dim, depth=depth,
                                        max_seq_len=max_seq_len, rank=rank,
                                        tie_weights=tie_weights, **config_kwargs)
        super().__init__(config)


def _preset(name: str, vocab_size: int, max_seq_len: int, **kwargs) -> HoloSpectralNet:
    dim, depth, rank = PRESETS[name]
    return HoloSpectralNet(vocab_size, dim=dim, depth=depth, max_seq_len=max_seq_len, rank=rank,
                           **kwargs)


def hsn_tiny(vocab_size: int = 32000, max_seq_len: int = 512, **kwargs) -> HoloSpectralNet:
    """dim 128, depth 4, rank 16 (4.12M parameters at vocab 32000, 4.10M of them embeddings)."""
    return _preset("tiny", vocab_size, max_seq_len, **kwargs)


def hsn_small(vocab_size: int = 32000, max_seq_len: int = 512, **kwargs) -> HoloSpectralNet:
    """dim 256, depth 6, rank 32 (8.31M parameters at vocab 32000, 8.19M of them embeddings)."""
    return _preset("small", vocab_size, max_seq_len, **kwargs)


def hsn_base(vocab_size: int = 32000, max_seq_len: int = 512, **kwargs) -> HoloSpectralNet:
    """dim 512, depth 8, rank 64 (16.95M parameters at vocab 32000, 16.38M of them
    embeddings)."""
    return _preset("base", vocab_size, max_seq_len, **kwargs)
