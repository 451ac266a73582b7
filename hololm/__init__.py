"""hololm: holographic and associative-memory language models in PyTorch.

Importing registers every family with `AutoConfig` / `AutoModelForCausalLM`. The names below load
on first use (PEP 562), and the `hololm` command skips the registration here: torch and
transformers take seconds to import, and `hololm --help` needs neither. Its subcommands import
the model code they run, and `hololm.models` registers the families whenever it is imported."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

__version__ = "0.1.0"

_SOURCES = {  # public name: the module that defines it
    "ops": "hololm.ops",  # the subpackage itself
    "byte_tokenizer": "hololm.data.tokenizers",
    "load_tokenizer": "hololm.data.tokenizers",
    "CausalSelfAttention": "hololm.layers.attention",
    "LongAttentionV5": "hololm.layers.long",
    "PhasorAttention": "hololm.layers.phasor",
    "RotaryEmbedding": "hololm.layers.rotary",
    **dict.fromkeys(("HolographicMixer", "HoloSpectralBlock", "LiteChannelMix", "SpectralGate"),
                    "hololm.layers.spectral"),
    **dict.fromkeys(("HoloCache", "HoloConfig", "HoloForCausalLM", "HoloGPTConfig",
                     "HoloGPTForCausalLM", "HoloSpectralConfig", "HoloSpectralForCausalLM",
                     "LongConfig", "LongForCausalLM", "build_model"), "hololm.models"),
    **dict.fromkeys(("FastHoloBlock", "HoloGPT", "HoloSpectralNet", "HoloTransformer",
                     "get_model_and_tokenizer", "holo_scan", "hsn_base", "hsn_small",
                     "hsn_tiny"), "hololm.originals"),
    **dict.fromkeys(("fft_circular_conv", "fft_circular_corr", "generate_random_phasors"),
                    "hololm.ops"),
}

__all__ = sorted([*_SOURCES, "__version__"])


def __getattr__(name: str):
    if name not in _SOURCES:
        raise AttributeError(f"module 'hololm' has no attribute {name!r}")
    module = importlib.import_module(_SOURCES[name])
    value = module if name == "ops" else getattr(module, name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_SOURCES})


def _started_as_hololm_command() -> bool:
    """Whether this process is the `hololm` console script: pip names it hololm (hololm.exe on
    Windows); `python hololm.py` or `python -m hololm.cli` do not match, and register."""
    return Path(getattr(sys, "argv", [""])[0] or "").name in ("hololm", "hololm.exe")


if not _started_as_hololm_command():
    import hololm.models  # noqa: E402, F401  (registers the families with the Auto classes)
