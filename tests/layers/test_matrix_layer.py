"""MatrixMemory: the layer equals its math run through the sequential references (`holo_scan`,
`gated_delta_rule_ref`, the short convolution as a padded conv1d) in float64, in HoloGPT's
setting and with the short convolution and the delta rule; whole sequence, prefix + rest and
token-by-token agree (outputs, states, gradients); causal; any forget strength is exact; bf16
works; the gates start at σ(+2) / σ(−2); packed documents run as if alone."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from hololm.layers.base import Padding, state_nbytes
from hololm.layers.matrix import MatrixMemory
from hololm.ops.delta_rule import gated_delta_rule_ref
from hololm.ops.matrix_memory import holo_scan
from tests.helpers import assert_close
from tests.layers.helpers import (
    assert_causal,
    backbone_style_init,
    loss_and_grads,
    run_pieces,
)
from tests.ops.documents import make_reset

B, D_MODEL, DIM, H = 2, 32, 8, 4
# HoloGPT's setting, and the ingredients of recall: a short convolution, the delta rule
SETTINGS = {"hologpt": {}, "conv": {"conv_size": 4},
            "delta": {"conv_size": 4, "update": "delta"}, "delta-noconv": {"update": "delta"}}


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
    w_f, w_w = layer.gate_proj.weight.chunk(2)
    b_f, b_w = layer.gate_proj.bias.chunk(2)
    qkv = F.linear(x, layer.qkv_proj.weight)  # [B, T, 3·H·D]
    if layer.conv is not None:  # depthwise, causal: left padding of k - 1 zeros
        k = layer.conv.kernel_size
        qkv = F.conv1d(F.pad(qkv.transpose(1, 2), (k - 1, 0)), layer.conv.conv.weight,
                       layer.conv.conv.bias, groups=qkv.shape[-1])
        qkv = F.silu(qkv.transpose(1, 2))
    q, k, v = qkv.view(Bx, T, 3, H, DIM).unbind(2)
    q, k, v = F.normalize(q, dim=-1), F.normalize(k, dim=-1), torch.tanh(v)
    forget = torch.sigmoid(F.linear(x, w_f, b_f))  # [B, T, H]
    write = torch.sigmoid(F.linear(x, w_w, b_w))
    if layer.update == "delta":
        r, memory = gated_delta_rule_ref(q, k, v, write, forget.log(), memory)
    else:
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


@pytest.mark.parametrize("setting", ["hologpt", "hologpt-read-before-write", "conv", "delta",
                                     "delta-noconv"])
def test_matches_the_reference(setting):
    kwargs = ({"read_before_write": True} if setting == "hologpt-read-before-write"
              else SETTINGS[setting])
    layer = _layer(chunk_size=8, **kwargs)
    x = torch.randn(B, 37, D_MODEL)
    y, state = layer(x)
    y_ref, m_ref = _reference(layer, x)
    assert_close(y, y_ref, 1e-5, "y")
    assert_close(state["memory"], m_ref, 1e-5, "memory")
    m0 = torch.randn(B, H, DIM, DIM)  # continuing from a given memory (and an empty conv)
    conv = {} if layer.conv is None else {"conv": torch.zeros(B, 3, 3 * H * DIM)}
    y, state = layer(x, {"memory": m0, **conv}, position=5)
    y_ref, m_ref = _reference(layer, x, m0.double())
    assert_close(y, y_ref, 1e-5, "y from a memory")
    assert_close(state["memory"], m_ref, 1e-5, "memory from a memory")


def test_the_delta_rule_overwrites_where_the_additive_memory_sums():
    """Same weights, same tokens: a key seen twice holds its last value under the delta rule,
    so its memory differs from the additive one; both keep the same state layout."""
    additive = _layer(conv_size=4)
    delta = copy.deepcopy(additive)
    delta.update = "delta"
    x = torch.randn(B, 20, D_MODEL)
    (_, s_add), (_, s_delta) = additive(x), delta(x)
    assert s_add.keys() == s_delta.keys() == {"memory", "conv"}
    assert not torch.allclose(s_add["memory"], s_delta["memory"])


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


@pytest.mark.parametrize("setting", ["hologpt", "hologpt-read-before-write", "conv", "delta"])
@pytest.mark.parametrize("chunk_size", [4, 64])
def test_full_equals_prefix_rest_and_token_by_token(chunk_size, setting):
    kwargs = ({"read_before_write": True} if setting == "hologpt-read-before-write"
              else SETTINGS[setting])
    layer = _layer(chunk_size=chunk_size, **kwargs)
    x = torch.randn(B, 37, D_MODEL)
    y, state, grads = loss_and_grads(layer, x, [37])
    for lengths in ([20, 17], [1] * 37):
        y2, state2, grads2 = loss_and_grads(layer, x, lengths)
        assert_close(y2, y, 1e-5, f"{len(lengths)} pieces y")
        assert_close(state2["memory"], state["memory"], 1e-5, f"{len(lengths)} pieces memory")
        for g2, g in zip(grads2, grads, strict=True):
            assert_close(g2, g, 1e-5, f"{len(lengths)} pieces grad")


@pytest.mark.parametrize("setting", ["hologpt", "hologpt-read-before-write", "conv", "delta"])
def test_causal(setting):
    kwargs = ({"read_before_write": True} if setting == "hologpt-read-before-write"
              else SETTINGS[setting])
    layer = _layer(chunk_size=4, **kwargs)
    assert_causal(layer, torch.randn(B, 30, D_MODEL), t=17)


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_gradients_reach_every_parameter_and_each_gate_bias(setting):
    layer = _layer(**SETTINGS[setting])
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


@pytest.mark.parametrize("setting", ["hologpt", "delta"])
@pytest.mark.parametrize("forget_bias", [-60.0, -1e4, 60.0])
def test_extreme_forget_gates_are_exact_and_finite(forget_bias, setting):
    """f = σ(bias) from e^-60 (memory = the last write) to 1 − e^-60 (nothing is forgotten)."""
    layer = _layer(chunk_size=4, **SETTINGS[setting])
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


@pytest.mark.parametrize("setting", ["hologpt", "delta"])
def test_bf16_runs_and_is_close_to_fp32(setting):
    layer = _layer(chunk_size=8, **SETTINGS[setting])
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


@pytest.mark.parametrize("setting", ["hologpt", "delta"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_state_bytes_match_and_do_not_grow(dtype, setting):
    layer = _layer(**SETTINGS[setting]).to(dtype)
    _, state = layer(torch.randn(3, 10, D_MODEL, dtype=dtype))
    conv = 0 if layer.conv is None else 3 * 3 * H * DIM * dtype.itemsize
    assert layer.state_bytes(3, 10) == state_nbytes(state) == 3 * (H * DIM * DIM * 4 + conv)
    _, state = layer(torch.randn(3, 1, D_MODEL, dtype=dtype), state, position=10)
    assert layer.state_bytes(3, 11) == state_nbytes(state)
    assert layer.state_bytes(3, 10) == layer.state_bytes(3, 10**6)


def _packed(starts: torch.Tensor, padded: bool) -> Padding:
    """The `Padding` of unpadded rows packing documents that begin where starts [B, T] is True
    (what the model builds from position_ids; only keep and starts reach this layer); `padded`
    True takes the layer's padding path all the same."""
    steps = torch.arange(starts.shape[1]).expand_as(starts)
    first = torch.where(starts, steps, 0).cummax(1).values  # each token's document start
    keep = torch.ones_like(starts)
    return Padding(keep=keep, keys=keep, positions=steps - first, starts=starts,
                   documents=starts.long().cumsum(1), padded=padded)


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("setting", ["hologpt", "hologpt-read-before-write", "conv", "delta"])
def test_packed_documents_equal_each_document_alone(setting, padded):
    """A row packing documents (starts at t = 0, mid-chunk, on chunk boundaries, in a row, the
    last token) gives each document's outputs and final memory as run alone; in pieces through
    the state, prefix then token by token, it equals the whole packed call."""
    kwargs = ({"read_before_write": True} if setting == "hologpt-read-before-write"
              else SETTINGS[setting])
    layer = _layer(chunk_size=8, **kwargs)
    T = 37
    x, starts = torch.randn(B, T, D_MODEL), make_reset(B, T, 8)
    y, state = layer(x, pad=_packed(starts, padded))
    for b, row in enumerate(starts.tolist()):
        bounds = [0, *(t for t in range(1, T) if row[t]), T]
        for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
            y_doc, state_doc = layer(x[b:b + 1, start:stop])
            assert_close(y[b:b + 1, start:stop], y_doc, 1e-5, f"row {b} tokens {start}:{stop}")
        assert_close(state["memory"][b:b + 1], state_doc["memory"], 1e-5, f"row {b} memory")
    split = 19
    y_p, state_p = layer(x[:, :split], pad=_packed(starts[:, :split], padded))
    ys = [y_p]
    for t in range(split, T):
        y_p, state_p = layer(x[:, t:t + 1], state_p, position=t,
                             pad=_packed(starts[:, t:t + 1], padded))
        ys.append(y_p)
    assert_close(torch.cat(ys, 1), y, 1e-5, "prefix then token by token")
    assert_close(state_p["memory"], state["memory"], 1e-5, "memory in pieces")


def test_invalid_arguments():
    for bad in ({"d_model": 0}, {"matrix_dim": -1}, {"n_heads": 2.0}):
        with pytest.raises(ValueError):
            MatrixMemory(**{"d_model": 8, "matrix_dim": 4, "n_heads": 2, **bad})
    with pytest.raises(ValueError):
        MatrixMemory(8, 4, 2, chunk_size=0)
    with pytest.raises(ValueError, match="conv_size must be an int >= 0"):
        MatrixMemory(8, 4, 2, conv_size=-1)
    with pytest.raises(ValueError, match="update must be one of"):
        MatrixMemory(8, 4, 2, update="replace")
    with pytest.raises(ValueError, match="read_before_write must be False"):
        MatrixMemory(8, 4, 2, update="delta", read_before_write=True)
