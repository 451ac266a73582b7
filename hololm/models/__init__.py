"""Configs, HF models, cache, the registry of names and `build_model`. Importing registers the
families with AutoConfig and AutoModelForCausalLM. The original projects' front doors
(`HoloTransformer`, `HoloGPT`, `HoloSpectralNet`, ...) live in `hololm.originals` and are
re-exported here on first use."""

import importlib

from transformers import AutoConfig, AutoModelForCausalLM

from hololm.models.cache import HoloCache
from hololm.models.configs import (
    HoloConfig,
    HoloGPTConfig,
    HoloLMConfig,
    HoloSpectralConfig,
    LongConfig,
)
from hololm.models.modeling import (
    HoloForCausalLM,
    HoloGPTForCausalLM,
    HoloLMForCausalLM,
    HoloSpectralForCausalLM,
    LongForCausalLM,
)
from hololm.models.presets import build_model, get_model_and_tokenizer
from hololm.models.registry import FAMILIES, NAMES, SIZES, VARIANTS

for _family in FAMILIES.values():
    AutoConfig.register(_family.config.model_type, _family.config, exist_ok=True)
    AutoModelForCausalLM.register(_family.config, _family.model, exist_ok=True)

ORIGINALS = ("FastHoloBlock", "HoloGPT", "HoloSpectralNet", "HoloTransformer", "hsn_base",
             "hsn_small", "hsn_tiny")


def __getattr__(name: str):
    # hololm.originals imports this package: its names load after it
    if name not in ORIGINALS:
        raise AttributeError(f"module 'hololm.models' has no attribute {name!r}")
    return getattr(importlib.import_module("hololm.originals"), name)


__all__ = [
    "FAMILIES",
    "NAMES",
    "SIZES",
    "VARIANTS",
    "HoloCache",
    "HoloConfig",
    "HoloForCausalLM",
    "HoloGPTConfig",
    "HoloGPTForCausalLM",
    "HoloLMConfig",
    "HoloSpectralConfig",
    "HoloSpectralForCausalLM",
    "HoloLMForCausalLM",
    "LongConfig",
    "LongForCausalLM",
    "build_model",
    "get_model_and_tokenizer",
    *ORIGINALS,
]
