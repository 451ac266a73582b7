import pytest
import torch

from hololm.models import (
    HoloConfig,
    HoloForCausalLM,
    HoloGPTConfig,
    HoloGPTForCausalLM,
    HoloSpectralConfig,
    HoloSpectralForCausalLM,
    LongConfig,
    LongForCausalLM,
)
from tests.models.helpers import VOCAB

MODELS = {"holo": (HoloConfig, HoloForCausalLM, {"hd_dim": 64}),
          "long": (LongConfig, LongForCausalLM, {}),
          "hologpt": (HoloGPTConfig, HoloGPTForCausalLM, {"matrix_dim": 16}),
          # the recall ingredients: short convs on q, k, v, the gated delta rule, permuted copies
          "hologpt-delta": (HoloGPTConfig, HoloGPTForCausalLM,
                            {"matrix_dim": 16, "conv_size": 4, "update": "delta"}),
          "holo-copies": (HoloConfig, HoloForCausalLM, {"hd_dim": 64, "conv_targets": "qkv",
                                                         "num_copies": 2, "learned_decay": True}),
          "hsn-conv": (HoloSpectralConfig, HoloSpectralForCausalLM,
                       {"max_seq_len": 16, "rank": 4, "conv_size": 4}),
          # a gate of 16 taps, shorter than most test sequences; "hybrid" also decays
          "hsn": (HoloSpectralConfig, HoloSpectralForCausalLM, {"max_seq_len": 16, "rank": 4})}


def tiny_model(family: str, hybrid: bool, **overrides) -> torch.nn.Module:
    """Three layers, d=32; hybrid puts attention at layer 2 (hybrid_ratio=2)."""
    config_class, model_class, own = MODELS[family]
    kwargs = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                  hybrid_ratio=2 if hybrid else 0, max_position_embeddings=4096, **own)
    if family == "hsn" and hybrid:
        kwargs["decay"] = 0.9
    kwargs.update(overrides)
    return model_class(config_class(**kwargs)).eval()


IMPROVED = ("hologpt-delta", "holo-copies", "hsn-conv")
# the improved settings pure only: their hybrids add no path the others do not test
FAMILIES = [(family, hybrid) for family in MODELS for hybrid in (False, True)
            if not (family in IMPROVED and hybrid)]


@pytest.fixture(params=FAMILIES, ids=lambda p: f"{p[0]}-{'hybrid' if p[1] else 'pure'}")
def model(request):
    torch.manual_seed(0)
    return tiny_model(*request.param)
