from __future__ import annotations

import copy
import math
from dataclasses import replace

import pytest
import torch

from hololm.layers.base import state_nbytes
from hololm.layers.phasor import PhasorAttention
from hololm.models.inputs import documents_of
from hololm.ops.phasor import generate_random_phasors, phasor_memory_ref
from hololm.ops.phasor.decayed import phasor_memory_decayed_ref
from tests.helpers import assert_close

B, D_MODEL, HD, H = 2, 16, 32, 4
CONFIGS = {
    "default": {},
    "no_position": {"use_position": False},
    "multi_scale": {"multi_scale": True},
    "dual_path": {"dual_path": True},
    "no_conv": {"key_conv_size": 1},
    "offset_real": {"learned_query_offset": True, "output_mode": "real"},
    "all": {"multi_scale": True, "dual_path": True, "learned_query_offset": True,
            "key_conv_size": 3},
    "conv_qkv": {"conv_targets": "qkv"},
    "copies": {"num_copies": 3, "learned_query_offset": True},
    "conv_qv_copies": {"conv_targets": "kqv", "num_copies": 2, "multi_scale": True},
    "decay": {"learned_decay": True, "conv_targets": "qkv", "learned_query_offset": True},
    "decay_copies": {"learned_decay": True, "num_copies": 2, "dual_path": True},
}
configs = pytest.mark.parametrize("cfg", list(CONFIGS))


def make_layer(cfg: str, dtype=torch.float32) -> PhasorAttention:
    layer = PhasorAttention(D_MODEL, HD, H, **CONFIGS[cfg])
    with torch.no_grad():  # nonzero δ, LayerNorm affine and conv bias so every path is exercised
        if layer.query_offset is not None:
            layer.query_offset.copy_(torch.tensor([0.0, 1.0, -2.5, 7.0]))
        layer.norm.weight.add_(0.1 * torch.randn_like(layer.norm.weight))
        layer.norm.bias.add_(0.1 * torch.randn_like(layer.norm.bias))
    return layer.to(dtype)


def random_state(layer: PhasorAttention, dtype=torch.float32) -> dict:
    mem = lambda c=1: 3 * torch.randn(B, H, c * HD // H, dtype=torch.complex64)  # noqa: E731
    state = {"memory": mem(layer.num_copies)}
    if layer.key_conv is not None:
        state["conv"] = torch.randn(B, layer.key_conv_size - 1, D_MODEL, dtype=dtype)
    if layer.dual_path:
        state["assoc"], state["prev"] = mem(), torch.randn(B, 1, D_MODEL, dtype=dtype)
    return state


def reference(layer: PhasorAttention, x: torch.Tensor, state: dict | None = None,
              position: int = 0) -> tuple[torch.Tensor, dict]:
    """The layer's math written out in float64 with the loop reference op and an explicit conv."""
    layer, x = copy.deepcopy(layer).double(), x.double()
    state = {k: v.to(torch.complex128 if v.is_complex() else torch.float64)
             for k, v in (state or {}).items()}
    T, pi = x.shape[1], math.pi
    heads = lambda z: z.view(B, T, H, HD // H)  # noqa: E731
    x_key, new = x, {}
    if layer.key_conv is not None:
        k = layer.key_conv_size
        window = torch.cat([state.get("conv", x.new_zeros(B, k - 1, D_MODEL)), x], 1)
        w, b = layer.key_conv.conv.weight[:, 0], layer.key_conv.conv.bias  # [d, k], [d]
        x_key = sum(window[:, j:j + T] * w[:, j] for j in range(k)) + b
        new["conv"] = window[:, T:]
    targets = layer.conv_targets
    v = heads(layer.v_proj(x_key if "v" in targets else x))
    phi = pi * torch.tanh(heads(layer.k_proj(x_key)))
    psi = pi * torch.tanh(heads(layer.q_proj(x_key if "q" in targets else x)))
    # copy c: the same values, key and query channels (and their frequencies) permuted by π_c
    C, Dh = layer.num_copies, HD // H
    perms = (torch.arange(Dh)[None] if C == 1 else layer.copy_index.view(C, Dh))
    omega = None if layer.freqs is None else layer.freqs[:, :Dh]  # copy 0: the identity
    memory = state.get("memory")
    copies, memories = [], []
    decay = ({} if layer.decay_logit is None
             else {"log_decay": torch.nn.functional.logsigmoid(layer.decay_logit)})
    memory_ref = phasor_memory_decayed_ref if decay else phasor_memory_ref
    for c, perm in enumerate(perms):
        r_c, m_c = memory_ref(
            v, phi[..., perm], psi[..., perm], None if omega is None else omega[:, perm],
            **decay, offset=position, query_shift=layer.query_offset,
            initial_state=None if memory is None else memory[..., c * Dh:(c + 1) * Dh])
        copies.append(r_c)
        memories.append(m_c)
    r, new["memory"] = torch.stack(copies).mean(0), torch.cat(memories, -1)
    rs = [r]
    if layer.dual_path:
        x_prev = torch.cat([state.get("prev", x.new_zeros(B, 1, D_MODEL)), x[:, :-1]], 1)
        a, new["assoc"] = phasor_memory_ref(
            heads(layer.assoc_v_proj(x)), pi * torch.tanh(heads(layer.assoc_k_proj(x_prev))),
            pi * torch.tanh(heads(layer.assoc_q_proj(x))), None, offset=position,
            initial_state=state.get("assoc"))
        rs.append(a)
        new["prev"] = x[:, -1:]
    parts = [p for r in rs for p in ((r.real, r.imag) if layer.output_mode == "complex"
                                     else (r.real,))]
    h = torch.cat([p.flatten(2) for p in parts], -1)
    return layer.o_proj(layer.norm(h)), new


def assert_states_close(a: dict, b: dict, tol: float):
    assert a.keys() == b.keys()
    for k in a:
        assert_close(a[k], b[k], tol, k)


def test_shapes_and_state_layout():
    layer = make_layer("all")
    y, state = layer(torch.randn(B, 9, D_MODEL))
    assert y.shape == (B, 9, D_MODEL)
    shapes = {k: (tuple(v.shape), v.dtype) for k, v in state.items()}
    assert shapes == {"memory": ((B, H, HD // H), torch.complex64),
                      "assoc": ((B, H, HD // H), torch.complex64),
                      "conv": ((B, 2, D_MODEL), torch.float32),
                      "prev": ((B, 1, D_MODEL), torch.float32)}
    assert set(make_layer("no_conv")(torch.randn(B, 3, D_MODEL))[1]) == {"memory"}
    _, state = make_layer("copies")(torch.randn(B, 9, D_MODEL))
    assert state["memory"].shape == (B, H, 3 * HD // H)  # the copies side by side per head


@configs
@pytest.mark.parametrize("position", [0, 5, 2 ** 17])
def test_matches_float64_reference(cfg, position):
    layer = make_layer(cfg)
    x = torch.randn(B, 13, D_MODEL)
    state = None if position == 0 else random_state(layer)
    y, new = layer(x, state, position)
    y_ref, new_ref = reference(layer, x, state, position)
    assert_close(y, y_ref, 1e-5, "y")
    assert_states_close(new, new_ref, 1e-5)


def test_position_matters_far_out():
    """At p = 2^17 the output differs from p = 0 (the position phases are really applied)."""
    layer = make_layer("default")
    x, state = torch.randn(B, 5, D_MODEL), random_state(layer)
    y_far, _ = layer(x, state, 2 ** 17)
    y_near, _ = layer(x, state, 0)
    assert (y_far - y_near).abs().max() > 1e-2


@configs
def test_full_equals_prefix_rest_and_steps(cfg):
    layer = make_layer(cfg)
    x = torch.randn(B, 37, D_MODEL)
    y, state = layer(x)
    y1, s1 = layer(x[:, :20])
    y2, s2 = layer(x[:, 20:], s1, 20)
    assert_close(torch.cat([y1, y2], 1), y, 1e-5, "prefix+rest")
    assert_states_close(s2, state, 1e-5)
    ys, s = [], None
    for t in range(37):
        yt, s = layer(x[:, t:t + 1], s, t)
        ys.append(yt)
    assert_close(torch.cat(ys, 1), y, 1e-5, "token by token")
    assert_states_close(s, state, 1e-5)


# row 0 packs four documents (one of a single token, one cut by every chunk below), row 1 two
PACKED = ((6, 1, 13, 10), (17, 13))


def _packed_pad(lengths=PACKED, start: int = 0, stop: int = 30, past_documents=None,
                padded: bool = False):
    """The Padding of tokens [start, stop) of rows packing documents of `lengths`, as the model
    builds it; `padded` True: as built where a mask could hold padding (the padding path)."""
    pos = torch.tensor([[i for n in row for i in range(n)] for row in lengths])
    pad = documents_of(None, pos[:, start:stop], past_documents, start, stop - start)
    return replace(pad, padded=True) if padded and pad is not None else pad


@pytest.mark.parametrize("padded", [False, True])
@configs
def test_packed_documents_run_alone(cfg, padded):
    """Each document of a packed row gives the outputs and parameter gradients it gives alone,
    and the packed row through the state in chunks that cut documents (token by token at the
    end) gives the full packed forward."""
    layer = make_layer(cfg)
    x = torch.randn(B, 30, D_MODEL)
    w = torch.randn(B, 30, D_MODEL, generator=torch.Generator().manual_seed(3))
    params = list(layer.parameters())
    y, _ = layer(x, pad=_packed_pad(padded=padded))
    packed_grads = torch.autograd.grad((y * w).sum(), params, allow_unused=True)
    expected, total = torch.empty_like(y), 0
    for row, parts in enumerate(PACKED):
        start = 0
        for n in parts:
            part = layer(x[row:row + 1, start:start + n])[0]
            expected[row, start:start + n] = part[0].detach()
            total = total + (part[0] * w[row, start:start + n]).sum()
            start += n
    alone_grads = torch.autograd.grad(total, params, allow_unused=True)
    assert_close(y, expected, 1e-5, "packed output")
    for p, got, want in zip(params, packed_grads, alone_grads, strict=True):
        got = torch.zeros_like(p) if got is None else got
        want = torch.zeros_like(p) if want is None else want
        assert_close(got, want, 1e-5, "packed gradient")
    ys, state, documents = [], None, None
    for start, stop in ((0, 5), (5, 7), (7, 20), *((t, t + 1) for t in range(20, 30))):
        pad = _packed_pad(start=start, stop=stop, past_documents=documents, padded=padded)
        out, state = layer(x[:, start:stop], state, start, pad)
        ys.append(out)
        documents = None if pad is None else pad.documents  # None: plain positions so far
    assert_close(torch.cat(ys, 1), y.detach(), 1e-5, "packed in chunks")


@configs
def test_causal(cfg):
    layer = make_layer(cfg)
    x = torch.randn(B, 24, D_MODEL)
    x2 = x.clone()
    x2[:, 11:] += torch.randn(B, 13, D_MODEL)
    y, y2 = layer(x)[0], layer(x2)[0]
    assert torch.equal(y[:, :11], y2[:, :11])
    assert (y[:, 11:] - y2[:, 11:]).abs().amax(-1).min() > 0


@configs
def test_gradients_reach_every_parameter(cfg):
    layer = make_layer(cfg)
    y, _ = layer(torch.randn(B, 12, D_MODEL), random_state(layer), 3)
    (y * torch.randn_like(y)).sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@configs
def test_bf16_close_to_fp32(cfg):
    layer = make_layer(cfg)
    layer16 = copy.deepcopy(layer).to(torch.bfloat16)
    assert layer16.freqs is None or torch.equal(layer16.freqs, layer.freqs)
    x = torch.randn(B, 37, D_MODEL)
    y, _ = layer(x)
    y16, s16 = layer16(x.bfloat16())
    assert y16.dtype == torch.bfloat16 and torch.isfinite(y16).all()
    assert_close(y16.float(), y, 3e-2, "bf16 vs fp32")  # measured ~0.8 %
    assert s16["memory"].dtype == torch.complex64
    y16_2, _ = layer16(x[:, :1].bfloat16(), s16, 37)  # decoding continues from a bf16 state
    assert torch.isfinite(y16_2).all()


@configs
def test_state_bytes(cfg):
    layer = make_layer(cfg)
    for T in (1, 40):
        _, state = layer(torch.randn(B, T, D_MODEL))
        assert layer.state_bytes(B, T) == state_nbytes(state)
    assert layer.state_bytes(B, 1) == layer.state_bytes(B, 10 ** 6)
    layer16 = layer.to(torch.bfloat16)
    _, state = layer16(torch.randn(B, 4, D_MODEL, dtype=torch.bfloat16))
    assert layer16.state_bytes(B, 4) == state_nbytes(state)


@configs
def test_parameter_count(cfg):
    layer, kw = make_layer(cfg), CONFIGS[cfg]
    k, dual = kw.get("key_conv_size", 4), kw.get("dual_path", False)
    feats = HD * (2 if kw.get("output_mode", "complex") == "complex" else 1) * (1 + dual)
    expected = (3 * D_MODEL * HD * (1 + dual) + (D_MODEL * (k + 1) if k > 1 else 0)
                + (H if kw.get("learned_query_offset") else 0)
                + (H if kw.get("learned_decay") else 0) + 2 * feats + feats * D_MODEL)
    assert sum(p.numel() for p in layer.parameters()) == expected


def test_frequencies():
    layer = PhasorAttention(D_MODEL, HD, H, phasor_seed=3)
    omega = generate_random_phasors(HD, seed=3).view(H, HD // H)
    assert layer.freqs.dtype == torch.float64 and torch.equal(layer.freqs, omega)
    assert torch.equal(layer.state_dict()["freqs"], omega)  # saved with the weights
    multi = PhasorAttention(D_MODEL, HD, H, phasor_seed=3, multi_scale=True)
    assert torch.equal(multi.freqs, omega * 2.0 ** -torch.arange(H, dtype=torch.float64)[:, None])
    assert PhasorAttention(D_MODEL, HD, H, use_position=False).freqs is None


def test_frequencies_survive_meta_and_reset():
    layer = make_layer("all")
    omega = layer.freqs.clone()
    empty = copy.deepcopy(layer).to("meta").to_empty(device="cpu")
    assert torch.equal(empty.freqs, omega)
    with torch.no_grad():
        layer.freqs.zero_()
    layer.reset_parameters()
    assert torch.equal(layer.freqs, omega) and not layer.query_offset.any()


def test_bad_arguments():
    with pytest.raises(ValueError, match="divisible"):
        PhasorAttention(D_MODEL, 30, 4)
    with pytest.raises(ValueError, match="output_mode"):
        PhasorAttention(D_MODEL, HD, H, output_mode="abs")
    with pytest.raises(ValueError, match="key_conv_size"):
        PhasorAttention(D_MODEL, HD, H, key_conv_size=0)
    with pytest.raises(ValueError, match="use_position"):
        PhasorAttention(D_MODEL, HD, H, use_position=False, learned_query_offset=True)
    for targets in ("", "qv", "kx"):
        with pytest.raises(ValueError, match="conv_targets"):
            PhasorAttention(D_MODEL, HD, H, conv_targets=targets)
    with pytest.raises(ValueError, match="num_copies"):
        PhasorAttention(D_MODEL, HD, H, num_copies=0)


def test_copies_cut_the_crosstalk_of_a_full_memory():
    """Hand-set weights, no position: 48 random (key, value) pairs written into 8 channels (far
    past the memory's clean capacity), then each key read back with one decoding step (which
    writes the query's own pair once more: the signal is 2 v). Key phases uniform on (−π, π),
    so the other items' crosstalk has mean zero; averaging 8 permuted copies divides it by
    about √8."""
    torch.manual_seed(0)
    d, n_items = 8, 48
    values = torch.randn(1, n_items, d, dtype=torch.float64)
    uniform = torch.rand(1, n_items, d, dtype=torch.float64) * 2 - 1
    x = torch.cat([values, torch.atanh(uniform * 0.999)], -1)  # π·tanh(·) of it: uniform phases
    eye, zero = torch.eye(d), torch.zeros(d, d)
    errors = {}
    for copies in (1, 8):
        layer = PhasorAttention(2 * d, d, 1, use_position=False, key_conv_size=1,
                                output_mode="real", num_copies=copies).double()
        layer.norm = torch.nn.Identity()
        with torch.no_grad():  # v = values, key and query phase from the same input, y = Re r
            layer.v_proj.weight.copy_(torch.cat([eye, zero], 1))
            layer.k_proj.weight.copy_(torch.cat([zero, eye], 1))
            layer.q_proj.weight.copy_(torch.cat([zero, eye], 1))
            layer.o_proj.weight.copy_(torch.cat([eye, zero], 0))
        _, state = layer(x)
        reads = torch.cat([layer(x[:, i:i + 1], state, n_items)[0] for i in range(n_items)], 1)
        # the read divides by √(p + 1)
        crosstalk = reads[..., :d] * math.sqrt(n_items + 1) - 2 * values
        errors[copies] = crosstalk.square().mean().sqrt().item()
    assert errors[8] < errors[1] / 2, errors
