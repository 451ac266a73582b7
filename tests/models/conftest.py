import pytest
import torch

from hololm.models import (
    HoloConfig,
    HoloForCausalLM,
    HoloGPTConfig,
    HoloGPTForCausalLM,
    LongConfig,
    LongForCausalLM,
)
from tests.models.helpers import VOCAB


def tiny_model(family: str, hybrid: bool, **overrides) -> torch.nn.Module:
    """Three layers, d=32; hybrid puts attention at layer 2 (hybrid_ratio=2)."""
    kwargs = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                  hybrid_ratio=2 if hybrid else 0, max_position_embeddings=4096)
    kwargs.update(overrides)
    if family == "holo":
        model = HoloForCausalLM(HoloConfig(**{"hd_dim": 64, **kwargs}))
    elif family == "hologpt":
        model = HoloGPTForCausalLM(HoloGPTConfig(**{"matrix_dim": 16, **kwargs}))
    else:
        model = LongForCausalLM(LongConfig(**kwargs))
    return model.eval()


FAMILIES = [(family, hybrid) for family in ("holo", "long", "hologpt") for hybrid in (False, True)]


@pytest.fixture(params=FAMILIES, ids=lambda p: f"{p[0]}-{'hybrid' if p[1] else 'pure'}")
def model(request):
    torch.manual_seed(0)
    return tiny_model(*request.param)
