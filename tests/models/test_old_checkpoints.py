"""Checkpoints saved before the family names settled (layer kinds "phasor" and "matrix",
HoloSpectralNet's own stack) still load and give the logits they gave when saved."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

OLD = Path(__file__).parent / "old_checkpoints"
KINDS = {"holo": ["holo", "attention"], "hologpt": ["hologpt"], "hsn": ["hsn", "hsn"]}


@pytest.mark.parametrize("name", sorted(KINDS))
@torch.no_grad()
def test_old_checkpoint_loads_with_the_same_logits(name):
    expected = load_file(OLD / "logits.safetensors")
    model = AutoModelForCausalLM.from_pretrained(OLD / name).eval()
    assert model.config.mixer_types == KINDS[name]
    assert torch.equal(model(expected["input_ids"]).logits, expected[name])
