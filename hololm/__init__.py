"""hololm: holographic and associative-memory language models in PyTorch.

Importing registers every family with `AutoConfig` / `AutoModelForCausalLM`."""

from hololm import ops
from hololm.data.tokenizers import byte_tokenizer, load_tokenizer
from hololm.layers.attention import CausalSelfAttention
from hololm.layers.long import LongAttentionV5
from hololm.layers.phasor import PhasorAttention
from hololm.layers.rotary import RotaryEmbedding
from hololm.layers.spectral import (
    HolographicMixer,
    HoloSpectralBlock,
    LiteChannelMix,
    SpectralGate,
)
from hololm.models import (
    FastHoloBlock,
    HoloCache,
    HoloConfig,
    HoloForCausalLM,
    HoloGPT,
    HoloGPTConfig,
    HoloGPTForCausalLM,
    HoloSpectralConfig,
    HoloSpectralForCausalLM,
    HoloSpectralNet,
    HoloTransformer,
    LongConfig,
    LongForCausalLM,
    build_model,
    get_model_and_tokenizer,
    hsn_base,
    hsn_small,
    hsn_tiny,
)
from hololm.ops import (
    fft_circular_conv,
    fft_circular_corr,
    generate_random_phasors,
    holo_scan,
)

__version__ = "0.1.0"

__all__ = [
    "CausalSelfAttention",
    "FastHoloBlock",
    "HoloCache",
    "HoloConfig",
    "HoloForCausalLM",
    "HoloGPT",
    "HoloGPTConfig",
    "HoloGPTForCausalLM",
    "HoloSpectralBlock",
    "HoloSpectralConfig",
    "HoloSpectralForCausalLM",
    "HoloSpectralNet",
    "HoloTransformer",
    "HolographicMixer",
    "LiteChannelMix",
    "LongAttentionV5",
    "LongConfig",
    "LongForCausalLM",
    "PhasorAttention",
    "RotaryEmbedding",
    "SpectralGate",
    "__version__",
    "build_model",
    "byte_tokenizer",
    "fft_circular_conv",
    "fft_circular_corr",
    "generate_random_phasors",
    "get_model_and_tokenizer",
    "holo_scan",
    "hsn_base",
    "hsn_small",
    "hsn_tiny",
    "load_tokenizer",
    "ops",
]
