"""MatrixMemory: the layer equals its math run through `holo_scan` (the sequential reference) in
float64; whole sequence, prefix + rest and token-by-token agree (outputs, states, gradients);
causal; any forget strength is exact; bf16 works; the gates start at σ(+2) / σ(−2)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from hololm.layers.base import state_nbytes
from hololm.layers.matrix import MatrixMemory
from hololm.ops.matrix_memory import holo_scan
from tests.helpers import assert_close
from tests.layers.helpers import (
    assert_causal,
    backbone_style_init,
    loss_and_grads,
    run_pieces,
)

B, D_MODEL, DIM, H = 2, 32, 8, 4


def _layer(**kwargs) -> MatrixMemory:
    """A layer with larger projections (so values and gates vary across tokens) and perturbed
    gate biases, so that every parameter's layout matters to the checks."""
    layer = MatrixMemory(D_MODEL, DIM, H, **kwargs)
    with torch.no_grad():
        layer.qkv_proj.weight.mul_(3.0)
        layer.gate_proj.weight.mul_(3.0)
        layer.gate_proj.bias.add_(0.5 * torch.randn(2 * H))
    return layer


def _reference(layer: MatrixMemory, x: torch.Tensor, memory: torch.Tensor | None = None):
    """The module docstring's math in float64: projections from the layer's own weights, memory
    by `holo_scan` (a loop over tokens), then o_proj."""
    layer, x = copy.deepcopy(layer).double(), x.double()
    Bx, T, _ = x.shape
    w_q, w_k, w_v = layer.qkv_proj.weight.chunk(3)
    w_f, w_w = layer.gate_proj.weight.chunk(2)
    b_f, b_w = layer.gate_proj.bias.chunk(2)
    q = F.normalize(F.linear(x, w_q).view(Bx, T, H, DIM), dim=-1)
    k = F.normalize(F.linear(x, w_k).view(Bx, T, H, DIM), dim=-1)
    v = torch.tanh(F.linear(x, w_v).view(Bx, T, H, DIM))
    forget = torch.sigmoid(F.linear(x, w_f, b_f))  # [B, T, H]
    write = torch.sigmoid(F.linear(x, w_w, b_w))
    r, memory = holo_scan(q, k, v, forget.log(), write, memory, layer.read_before_write)
    return layer.o_proj(r.reshape(Bx, T, H * DIM)), memory






def test_shapes_and_state_layout():
    layer = MatrixMemory(D_MODEL, 16, 2)
    y, state = layer(torch.randn(B, 11, D_MODEL))
    assert y.shape == (B, 11, D_MODEL) and y.dtype == torch.float32
    assert list(state) == ["memory"]
    assert state["memory"].shape == (B, 2, 16, 16) and state["memory"].dtype == torch.float32
    n_params = sum(p.numel() for p in layer.parameters())
    assert n_params == 4 * D_MODEL * 2 * 16 + 2 * 2 * (D_MODEL + 1)  # 4·d·H·D + 2H(d + 1)


@pytest.mark.parametrize("read_before_write", [False, True])
def test_matches_holo_scan_reference(read_before_write):
    layer = _layer(chunk_size=8, read_before_write=read_before_write)
    x = torch.randn(B, 37, D_MODEL)
    y, state = layer(x)
    y_ref, m_ref = _reference(layer, x)
    assert_close(y, y_ref, 1e-5, "y")
    assert_close(state["memory"], m_ref, 1e-5, "memory")
    m0 = torch.randn(B, H, DIM, DIM)  # continuing from a given memory
    y, state = layer(x, {"memory": m0}, position=5)
    y_ref, m_ref = _reference(layer, x, m0.double())
    assert_close(y, y_ref, 1e-5, "y from a memory")
    assert_close(state["memory"], m_ref, 1e-5, "memory from a memory")


def test_read_before_write_reads_the_previous_memory():
    """With no memory, the first token reads nothing before its write; later tokens differ from
    the read-after-write layer with the same weights."""
    layer = _layer()
    layer_rbw = copy.deepcopy(layer)
    layer_rbw.read_before_write = True
    x = torch.randn(B, 9, D_MODEL)
    (y, state), (y_rbw, state_rbw) = layer(x), layer_rbw(x)
    assert torch.equal(y_rbw[:, 0], torch.zeros_like(y_rbw[:, 0]))
    assert not torch.allclose(y_rbw[:, 1:], y[:, 1:])
    assert_close(state_rbw["memory"], state["memory"], 1e-6, "the writes are the same")


@pytest.mark.parametrize("read_before_write", [False, True])
@pytest.mark.parametrize("chunk_size", [4, 64])
def test_full_equals_prefix_rest_and_token_by_token(chunk_size, read_before_write):
    layer = _layer(chunk_size=chunk_size, read_before_write=read_before_write)
    x = torch.randn(B, 37, D_MODEL)
    y, state, grads = loss_and_grads(layer, x, [37])
    for lengths in ([20, 17], [1] * 37):
        y2, state2, grads2 = loss_and_grads(layer, x, lengths)
        assert_close(y2, y, 1e-5, f"{len(lengths)} pieces y")
        assert_close(state2["memory"], state["memory"], 1e-5, f"{len(lengths)} pieces memory")
        for g2, g in zip(grads2, grads, strict=True):
            assert_close(g2, g, 1e-5, f"{len(lengths)} pieces grad")


@pytest.mark.parametrize("read_before_write", [False, True])
def test_causal(read_before_write):
    layer = _layer(chunk_size=4, read_before_write=read_before_write)
    assert_causal(layer, torch.randn(B, 30, D_MODEL), t=17)


def test_gradients_reach_every_parameter_and_each_gate_bias():
    layer = _layer()
    _, _, grads = loss_and_grads(layer, torch.randn(B, 25, D_MODEL), [25])
    named = dict(zip([name for name, _ in layer.named_parameters()], grads[1:], strict=True))
    for name, g in named.items():
        assert torch.isfinite(g).all(), name
        assert g.abs().sum() > 0, name
    assert (named["gate_proj.bias"] != 0).all()  # every head's forget and write bias


def test_initial_gates_after_reset_parameters():
    layer = MatrixMemory(D_MODEL, DIM, H)
    backbone_style_init(layer)  # the backbone's generic init, then its call to reset_parameters
    layer.reset_parameters()
    b_f, b_w = layer.gate_proj.bias.detach().view(2, H)
    assert (b_f == 2.0).all() and (b_w == -2.0).all()
    with torch.no_grad():
        gates = torch.sigmoid(layer.gate_proj(torch.randn(B, 50, D_MODEL))).view(B, 50, 2, H)
    f, w = gates.unbind(2)
    sig2 = 1 / (1 + math.exp(-2))  # ≈ 0.881
    assert (f - sig2).abs().max() < 0.05 and (w - (1 - sig2)).abs().max() < 0.05
    assert abs(f.mean() - sig2) < 0.01 and abs(w.mean() - (1 - sig2)) < 0.01
    custom = MatrixMemory(D_MODEL, DIM, H, forget_bias=5.0, write_bias=0.0)
    assert torch.equal(custom.gate_proj.bias, torch.tensor([5.0] * H + [0.0] * H))


@pytest.mark.parametrize("forget_bias", [-60.0, -1e4, 60.0])
def test_extreme_forget_gates_are_exact_and_finite(forget_bias):
    """f = σ(bias) from e^-60 (memory = the last write) to 1 − e^-60 (nothing is forgotten)."""
    layer = _layer(chunk_size=4)
    with torch.no_grad():
        layer.gate_proj.bias[:H] = forget_bias
    x = torch.randn(B, 29, D_MODEL)
    y, state, grads = loss_and_grads(layer, x, [29])
    assert torch.isfinite(y).all() and all(torch.isfinite(g).all() for g in grads)
    y_ref, m_ref = _reference(layer, x)
    assert_close(y, y_ref, 1e-5, "y")
    assert_close(state["memory"], m_ref, 1e-5, "memory")
    y1, state1 = run_pieces(layer, x, [1] * 29)
    assert_close(y1, y, 1e-5, "token by token")
    assert_close(state1["memory"], state["memory"], 1e-5, "token-by-token memory")


def test_bf16_runs_and_is_close_to_fp32():
    layer = _layer(chunk_size=8)
    x = torch.randn(B, 37, D_MODEL)
    y32, state32 = layer(x)
    layer16 = copy.deepcopy(layer).to(torch.bfloat16)
    x16 = x.bfloat16()
    y16, state16 = layer16(x16)
    assert y16.dtype == torch.bfloat16 and torch.isfinite(y16).all()
    assert state16["memory"].dtype == torch.float32
    # bf16 weights and inputs (8 mantissa bits) perturb every projection by ~0.4 %
    assert_close(y16, y32, 3e-2, "bf16 y")
    assert_close(state16["memory"], state32["memory"], 3e-2, "bf16 memory")
    y16b, _ = run_pieces(layer16, x16, [20, 1, 16])
    assert_close(y16b, y16, 1e-2, "bf16 continuation")
    y16.float().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in layer16.parameters())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_state_bytes_match_and_do_not_grow(dtype):
    layer = _layer().to(dtype)
    _, state = layer(torch.randn(3, 10, D_MODEL, dtype=dtype))
    assert layer.state_bytes(3, 10) == state_nbytes(state) == 3 * H * DIM * DIM * 4
    _, state = layer(torch.randn(3, 1, D_MODEL, dtype=dtype), state, position=10)
    assert layer.state_bytes(3, 11) == state_nbytes(state)
    assert layer.state_bytes(3, 10) == layer.state_bytes(3, 10**6)


def test_invalid_arguments():
    for bad in ({"d_model": 0}, {"matrix_dim": -1}, {"n_heads": 2.0}):
        with pytest.raises(ValueError):
            MatrixMemory(**{"d_model": 8, "matrix_dim": 4, "n_heads": 2, **bad})
    with pytest.raises(ValueError):
        MatrixMemory(8, 4, 2, chunk_size=0)
