"""Configs, HF models, cache and presets. Importing registers the families with AutoConfig
and AutoModelForCausalLM."""

from transformers import AutoConfig, AutoModelForCausalLM

from hololm.models.cache import HoloCache
from hololm.models.configs import HoloConfig, HoloGPTConfig, HoloLMConfig, LongConfig
from hololm.models.hologpt import FastHoloBlock, HoloGPT
from hololm.models.hsn import (
    HoloSpectralConfig,
    HoloSpectralForCausalLM,
    HoloSpectralNet,
    hsn_base,
    hsn_small,
    hsn_tiny,
)
from hololm.models.modeling import (
    HoloForCausalLM,
    HoloGPTForCausalLM,
    HoloLMForCausalLM,
    HoloTransformer,
    LongForCausalLM,
)
from hololm.models.presets import SIZES, build_model, get_model_and_tokenizer

for _config, _model in ((HoloConfig, HoloForCausalLM), (LongConfig, LongForCausalLM),
                        (HoloGPTConfig, HoloGPTForCausalLM),
                        (HoloSpectralConfig, HoloSpectralForCausalLM)):
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModelForCausalLM.register(_config, _model, exist_ok=True)

__all__ = [
    "SIZES",
    "FastHoloBlock",
    "HoloCache",
    "HoloConfig",
    "HoloForCausalLM",
    "HoloGPT",
    "HoloGPTConfig",
    "HoloGPTForCausalLM",
    "HoloLMConfig",
    "HoloSpectralConfig",
    "HoloSpectralForCausalLM",
    "HoloSpectralNet",
    "HoloLMForCausalLM",
    "HoloTransformer",
    "LongConfig",
    "LongForCausalLM",
    "build_model",
    "get_model_and_tokenizer",
    "hsn_base",
    "hsn_small",
    "hsn_tiny",
]
