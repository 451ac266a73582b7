"""LongAttentionV5: the layer equals its math written as a float64 loop; whole sequence, prefix +
rest and token-by-token agree (outputs, states, gradients); causal; any decay strength is exact;
20k-token inputs continue exactly; bf16 works; the initial decays span [0.5, 0.9999]."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from hololm.layers.base import state_nbytes
from hololm.layers.long import LongAttentionV5
from tests.helpers import assert_close
from tests.layers.helpers import (
    assert_causal,
    assert_packed_equals_alone,
    backbone_style_init,
    loss_and_grads,
    packed,
    run_packed,
    run_pieces,
)

B, D_MODEL, H = 2, 32, 4


def _layer(**kwargs) -> LongAttentionV5:
    """A layer whose norm affines and gate biases are perturbed, so that every parameter's layout
    matters to the checks (the decay biases keep their per-head spread)."""
    layer = LongAttentionV5(D_MODEL, H, **kwargs)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if "norm" in name or name == "gate_proj.bias":
                p.add_(0.2 * torch.randn_like(p))
    return layer


def _reference(layer: LongAttentionV5, x: torch.Tensor, h: torch.Tensor | None = None):
    """The module docstring's math, token by token in float64 (decays taken as σ, not log σ)."""
    layer, x = copy.deepcopy(layer).double(), x.double()
    Bx, T, d = x.shape
    Hh, D, k = layer.n_heads, layer.head_dim, layer.conv.kernel_size
    conv_w = layer.conv.conv.weight[:, 0].T  # [k, d]
    w_q, w_k = layer.qk_proj.weight.chunk(2)
    w_i, w_g, w_o = layer.gate_proj.weight.chunk(3)
    b_i, b_g, b_o = layer.gate_proj.bias.chunk(3)
    x_pad = F.pad(x, (0, 0, k - 1, 0))
    h = x.new_zeros(Bx, Hh, D) if h is None else h.double()
    ys = []
    for t in range(T):
        xc = F.silu((x_pad[:, t:t + k] * conv_w).sum(1) + layer.conv.conv.bias)  # [B, d]
        q = F.normalize(F.linear(xc, w_q).view(Bx, Hh, D), dim=-1)
        kk = F.normalize(F.linear(xc, w_k).view(Bx, Hh, D), dim=-1)
        v = layer.v_norm(F.linear(x[:, t], layer.v_proj.weight).view(Bx, Hh, D))
        i = torch.sigmoid(F.linear(xc, w_i, b_i)).view(Bx, Hh, D)
        gamma = torch.sigmoid(F.linear(xc, w_g, b_g)).view(Bx, Hh, D)
        h = gamma * h + i * kk * v
        o = layer.h_norm(h) * q / math.sqrt(D)
        o = layer.out_norm(o.reshape(Bx, d))  # GroupNorm: one group per head
        o = o * torch.sigmoid(F.linear(xc, w_o, b_o))
        ys.append(layer.o_proj(o))
    return torch.stack(ys, 1), h






def test_shapes_and_state_layout():
    layer = _layer(conv_size=3)
    y, state = layer(torch.randn(B, 11, D_MODEL))
    assert y.shape == (B, 11, D_MODEL) and y.dtype == torch.float32
    assert state["h"].shape == (B, H, D_MODEL // H) and state["h"].dtype == torch.float32
    assert state["conv"].shape == (B, 2, D_MODEL)


def test_matches_float64_reference_loop():
    layer = _layer(chunk_size=8)
    x = torch.randn(B, 37, D_MODEL)
    y, state = layer(x)
    y_ref, h_ref = _reference(layer, x)
    assert_close(y, y_ref, 1e-5, "y")
    assert_close(state["h"], h_ref, 1e-5, "h")


@pytest.mark.parametrize("chunk_size", [4, 64])
def test_full_equals_prefix_rest_and_token_by_token(chunk_size):
    layer = _layer(chunk_size=chunk_size)
    x = torch.randn(B, 37, D_MODEL)
    y, state, grads = loss_and_grads(layer, x, [37])
    for lengths in ([20, 17], [1] * 37):
        y2, state2, grads2 = loss_and_grads(layer, x, lengths)
        assert_close(y2, y, 1e-5, f"{len(lengths)} pieces y")
        for key in state:
            assert_close(state2[key], state[key], 1e-5, f"{len(lengths)} pieces state {key}")
        for g2, g in zip(grads2, grads, strict=True):
            assert_close(g2, g, 1e-5, f"{len(lengths)} pieces grad")


def test_causal():
    layer = _layer(chunk_size=4)
    assert_causal(layer, torch.randn(B, 30, D_MODEL), t=17)


def test_gradients_reach_every_parameter():
    layer = _layer()
    _, _, grads = loss_and_grads(layer, torch.randn(B, 25, D_MODEL), [25])
    for (name, _), g in zip(layer.named_parameters(), grads[1:], strict=True):
        assert torch.isfinite(g).all(), name
        assert g.abs().sum() > 0, name


def test_initial_decays_span_half_to_0p9999():
    layer = LongAttentionV5(D_MODEL, 8, gate_init_bias=1.5)
    backbone_style_init(layer)  # the backbone's generic init, then its call to reset_parameters
    layer.reset_parameters()
    b_i, b_decay, b_o = layer.gate_proj.bias.detach().double().view(3, 8, D_MODEL // 8)
    decay = torch.sigmoid(b_decay)
    assert torch.equal(decay, decay[:, :1].expand_as(decay))  # one decay per head
    forget = 1 - decay[:, 0]
    assert abs(decay[0, 0] - 0.5) < 1e-6 and abs(decay[-1, 0] - 0.9999) < 1e-8
    ratios = forget[1:] / forget[:-1]
    assert (ratios < 1).all() and torch.allclose(ratios, ratios[0].expand_as(ratios), rtol=1e-5)
    assert (b_i == 1.5).all() and (b_o == 0).all()


@pytest.mark.parametrize("bias", [-60.0, -100.0, -1e4])
def test_strong_decays_are_exact_and_finite(bias):
    """γ = σ(bias) from e^-60 to 0: the memory is just the last token; nothing over/underflows
    into a wrong value (the seed clamped log-decays at ±50 in its chunked path)."""
    layer = _layer(chunk_size=4)
    with torch.no_grad():
        layer.gate_proj.bias.view(3, -1)[1] = bias
    x = torch.randn(B, 29, D_MODEL)
    y, state, grads = loss_and_grads(layer, x, [29])
    assert torch.isfinite(y).all() and all(torch.isfinite(g).all() for g in grads)
    y_ref, h_ref = _reference(layer, x)
    assert_close(y, y_ref, 1e-5, "y")
    assert_close(state["h"], h_ref, 1e-5, "h")
    y1, state1 = run_pieces(layer, x, [1] * 29)
    assert_close(y1, y, 1e-5, "token by token")
    assert_close(state1["h"], state["h"], 1e-5, "token-by-token state")


def test_long_input_continues_exactly():
    """20k tokens, decays up to 0.9999 (memory ~10^4 tokens): whole vs uneven chunked
    continuation vs the same layer in float64."""
    layer = LongAttentionV5(8, 2)
    x = torch.randn(1, 20_000, 8)
    with torch.no_grad():
        y, state = layer(x)
        y2, state2 = run_pieces(layer, x, [7001, 1, 5000, 7998])
        y64, state64 = copy.deepcopy(layer).double()(x.double())
    assert torch.isfinite(y).all() and torch.isfinite(state["h"]).all()
    assert_close(y2, y, 1e-5, "chunked continuation y")
    assert_close(state2["h"], state["h"], 1e-5, "chunked continuation h")
    assert_close(y, y64, 1e-5, "float32 vs float64 y")
    assert_close(state["h"], state64["h"], 1e-5, "float32 vs float64 h")


def test_bf16_runs_and_is_close_to_fp32():
    layer = _layer(chunk_size=8)
    x = torch.randn(B, 37, D_MODEL)
    y32, state32 = layer(x)
    layer16 = copy.deepcopy(layer).to(torch.bfloat16)
    x16 = x.bfloat16()
    y16, state16 = layer16(x16)
    assert y16.dtype == torch.bfloat16 and torch.isfinite(y16).all()
    assert state16["h"].dtype == torch.float32 and state16["conv"].dtype == torch.bfloat16
    # bf16 weights and inputs (8 mantissa bits) perturb every projection by ~0.4 %
    assert_close(y16, y32, 3e-2, "bf16 y")
    assert_close(state16["h"], state32["h"], 3e-2, "bf16 h")
    y16b, _ = run_pieces(layer16, x16, [20, 1, 16])
    assert_close(y16b, y16, 1e-2, "bf16 continuation")
    y16.float().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in layer16.parameters())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_state_bytes_match_and_do_not_grow(dtype):
    layer = _layer().to(dtype)
    _, state = layer(torch.randn(3, 10, D_MODEL, dtype=dtype))
    assert layer.state_bytes(3, 10) == state_nbytes(state)
    _, state = layer(torch.randn(3, 1, D_MODEL, dtype=dtype), state, position=10)
    assert layer.state_bytes(3, 11) == state_nbytes(state)
    assert layer.state_bytes(3, 10) == layer.state_bytes(3, 10**6)


def test_invalid_arguments():
    with pytest.raises(ValueError):
        LongAttentionV5(30, 4)
    with pytest.raises(ValueError):
        LongAttentionV5(32, 4, decay_min=0.9, decay_max=0.5)
    with pytest.raises(ValueError):
        LongAttentionV5(32, 4, decay_max=1.0)


PACKED = ((5, 1, 9, 3), (18,))  # row 0 packs four documents (one of a single token)


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("chunk_size", [4, 16])
def test_packed_documents_equal_each_alone(chunk_size, padded):
    """Each document of a packed row gets the outputs and gradients it gets alone (starts inside
    and on the scan's chunks), and the state handed on is its last document's."""
    torch.manual_seed(0)
    assert_packed_equals_alone(_layer(chunk_size=chunk_size), torch.randn(2, 18, D_MODEL),
                               PACKED, 1e-5, padded)


@pytest.mark.parametrize("padded", [False, True])
def test_packed_pieces_equal_the_full_packed_forward(padded):
    """Chunks that cut documents, single tokens among them (the decoding step): the outputs and
    the final state equal the whole packed forward."""
    torch.manual_seed(0)
    layer, x, pad = _layer(chunk_size=4), torch.randn(2, 18, D_MODEL), packed(PACKED, padded)
    y, state = layer(x, None, 0, pad=pad)
    y2, state2 = run_packed(layer, x, pad, [4, 1, 1, 7, 1, 4])
    assert_close(y2, y, 1e-5, "y")
    for key in state:
        assert_close(state2[key], state[key], 1e-5, key)
