"""The original projects' documented snippets and call forms, in hololm's names and at tiny sizes.

The model quick starts live next to their models: Holo-Transformer, LongAttention V5 and HoloGPT
in tests/models/test_seed_apis.py, HoloSpectralNet's quick start and training example in
tests/models/test_hsn.py. Here: HoloSpectralNet's component snippets and its "API Documentation"
call forms, the imports the original projects' code uses, and the Holo-Transformer research
build's phasor generator.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import hololm
from hololm import fft_circular_conv, fft_circular_corr
from hololm.layers import (
    CausalSelfAttention,
    GatedMLP,
    GeluMLP,
    HolographicMixer,
    HoloSpectralBlock,
    LiteChannelMix,
    LongAttentionV5,
    MatrixMemory,
    PhasorAttention,
    RotaryEmbedding,
    ShortConv,
    SpectralGate,
)
from tests.helpers import assert_close

B, T, DIM, MAX_SEQ_LEN, RANK = 2, 12, 32, 16, 8


def test_layers_are_exported_from_hololm_layers():
    """`from hololm.layers import PhasorAttention` and the rest, the same classes as `hololm.X`."""
    layers = [CausalSelfAttention, GatedMLP, GeluMLP, HolographicMixer, HoloSpectralBlock,
              LiteChannelMix, LongAttentionV5, MatrixMemory, PhasorAttention, RotaryEmbedding,
              ShortConv, SpectralGate]
    assert {cls.__name__ for cls in layers} <= set(hololm.layers.__all__)
    for cls in layers:
        assert getattr(hololm, cls.__name__, cls) is cls


def test_seed004_holographic_mixer_snippet():
    """The seed's three lines, `retrieved = fft_circular_corr(hologram, unbind_key)` included,
    are our mixer up to the 1/sqrt(t+1) that keeps its output from growing with the context."""
    mixer = HolographicMixer(DIM)
    x = torch.randn(B, T, DIM)
    bind_key, unbind_key = mixer.bind_key, mixer.unbind_key
    # Binding
    bound = fft_circular_conv(x, bind_key)
    # Bundling
    hologram = torch.cumsum(bound, dim=1)
    # Unbinding
    retrieved = fft_circular_corr(hologram, unbind_key)
    scale = torch.arange(1, T + 1).rsqrt().unsqueeze(-1)  # [T, 1]
    assert_close(mixer(x), retrieved * scale, 1e-5, "mixer vs the seed's lines")


def test_seed004_unbinding_with_the_bind_key_recovers_the_token():
    """The seed's unbinding line recovers what was bound with the same key (HRR, D = 1024):
    cosine ~0.7 against ~0.03 by chance."""
    d = 1024
    x, key = torch.randn(d), torch.randn(d) / d**0.5
    retrieved = fft_circular_corr(fft_circular_conv(x, key), key)
    assert F.cosine_similarity(retrieved, x, dim=0) > 0.5


def test_seed004_spectral_gate_call():
    """The seed's `irfft(rfft(x, dim=1) · sigmoid(freq_gate), dim=1)` is a circular convolution
    over time that leaks the future (tests/layers/test_spectral_layers.py shows it); the closest
    faithful call is the layer, with the seed's max_seq_len // 2 + 1 gates, applied causally."""
    gate = SpectralGate(MAX_SEQ_LEN)
    assert sum(p.numel() for p in gate.parameters()) == MAX_SEQ_LEN // 2 + 1
    x = torch.randn(B, T, DIM)
    output = gate(x)
    assert isinstance(output, torch.Tensor) and output.shape == x.shape


def test_seed004_lite_channel_mix_snippet():
    mix = LiteChannelMix(DIM, RANK)
    assert sum(p.numel() for p in mix.parameters()) == 2 * DIM * RANK + DIM
    x = torch.randn(B, T, DIM)
    scale, up, down, gelu = mix.scale, mix.up, mix.down, F.gelu
    # dim → rank → dim (vs traditional dim → 4*dim → dim)
    output = x + scale * up(gelu(down(x)))
    assert_close(mix(x), output, 1e-6, "channel mix")


@pytest.mark.parametrize("make", [
    lambda: HolographicMixer(DIM),
    lambda: SpectralGate(MAX_SEQ_LEN),
    lambda: LiteChannelMix(DIM, RANK),
    lambda: HoloSpectralBlock(DIM, MAX_SEQ_LEN, RANK),
    lambda: RotaryEmbedding(DIM),
], ids=["mixer", "gate", "channel_mix", "block", "rotary"])
def test_seed004_layer_classes_return_tensors(make):
    """The seed's "Layer Classes", built with their documented arguments: x [B, T, dim] to a tensor
    of the same shape (the state-carrying form is the models' business)."""
    layer = make()
    x = torch.randn(B, T, DIM)
    y = layer(x)
    assert isinstance(y, torch.Tensor) and y.shape == x.shape and torch.isfinite(y).all()


def test_seed004_rotary_embedding_is_parameter_free():
    assert not list(RotaryEmbedding(DIM).parameters())


def test_seed004_holo_spectral_net_defaults_and_forward():
    """`HoloSpectralNet` with the documented defaults (vocab_size 32000 cut to 100 here: the
    embeddings are the only part it sizes) and `forward(x)` returning logits."""
    model = hololm.HoloSpectralNet(vocab_size=100)
    c = model.config
    assert (c.dim, c.depth, c.max_seq_len, c.rank, c.tie_weights) == (256, 6, 512, 32, True)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    logits = model(torch.randint(0, 100, (B, T)))
    assert isinstance(logits, torch.Tensor) and logits.shape == (B, T, 100)


def test_seed001_random_phasors():
    """The research build's `functional.generate_random_phasors` (no call form documented):
    frequencies drawn uniformly, here in [-π, π), deterministic for a seed."""
    freqs = hololm.generate_random_phasors(64, seed=1)
    assert freqs.shape == (64,) and freqs.abs().max() <= math.pi
    assert torch.equal(freqs, hololm.generate_random_phasors(64, seed=1))
