"""HoloSpectralNet layers: each equals its math written as a float64 loop; whole sequence, prefix +
rest and token-by-token agree (outputs, states, gradients); causal — while the seed's spectral gate
provably leaks; sequences longer than max_seq_len; bf16; state sizes; parameter counts."""

from __future__ import annotations

import math

import pytest
import torch

from hololm.layers.base import state_nbytes
from hololm.layers.spectral import (
    SCALE_INIT,
    HolographicMixer,
    HoloSpectralBlock,
    LiteChannelMix,
    SpectralGate,
)
from hololm.ops.circular import circular_conv_ref, circular_corr_ref
from tests.helpers import assert_close
from tests.layers.helpers import (
    assert_packed_equals_alone,
    loss_and_grads,
    packed,
    run_packed,
    run_pieces,
)

B, D, N, RANK = 2, 32, 16, 8  # N: the gate's max_seq_len, shorter than most test sequences


@torch.no_grad()
def _randomise(module: torch.nn.Module) -> torch.nn.Module:
    """Trained-like parameters: gate logits of both signs, random scales and norm affines, so
    no check passes by the symmetry of an init (g = 0 makes the gate an identity)."""
    for name, p in module.named_parameters():
        if name.endswith("gate"):
            p.copy_(2 * torch.randn_like(p))
        elif name.endswith("scale") or "norm" in name:
            p.add_(0.5 * torch.randn_like(p))
    return module


def _layers() -> dict[str, torch.nn.Module]:
    return {"mixer": HolographicMixer(D), "mixer_decay": HolographicMixer(D, decay=0.9),
            "gate": _randomise(SpectralGate(N)),
            "block": _randomise(HoloSpectralBlock(D, N, RANK, decay=0.95)),
            "block_conv": _randomise(HoloSpectralBlock(D, N, RANK, decay=0.95, conv_size=3))}


LAYERS = list(_layers())


def _seed_spectral_gate(x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """The original SpectralGate, its three lines verbatim (the gate cut to T // 2 + 1 bins)."""
    x_freq = torch.fft.rfft(x, dim=1)
    x_gated = x_freq * torch.sigmoid(gate[: x_freq.shape[1]]).unsqueeze(-1)
    return torch.fft.irfft(x_gated, n=x.shape[1], dim=1)


def _kernel_ref(gate: torch.Tensor, n: int) -> torch.Tensor:
    """irfft written out in float64: h_j = (1/n) Σ_k c_k σ(g_k) cos(2π k j / n), c_k = 2 except
    at k = 0 and the Nyquist bin of an even n."""
    r = torch.sigmoid(gate.double())
    k, j = torch.arange(len(r), dtype=torch.float64), torch.arange(n, dtype=torch.float64)
    c = torch.full_like(r, 2.0)
    c[0] = 1.0
    if n % 2 == 0:
        c[-1] = 1.0
    return (c * r * torch.cos(2 * math.pi * torch.outer(j, k) / n)).sum(1) / n


def _mixer_ref(layer: HolographicMixer, x: torch.Tensor, position: int = 0):
    """The mixer's docstring math, token by token in float64 with the O(d²) circular refs."""
    x = x.double()
    b, u = layer.bind_key.detach().double(), layer.unbind_key.detach().double()
    lam = 1.0 if layer.decay is None else layer.decay
    h, ys = x.new_zeros(x.shape[0], x.shape[2]), []
    for t in range(x.shape[1]):
        h = lam * h + circular_conv_ref(b, x[:, t])
        n = sum(lam ** (2 * k) for k in range(position + t + 1))
        ys.append(circular_corr_ref(h, u) / math.sqrt(n))
    return torch.stack(ys, 1), h






def test_shapes_and_state_layout():
    layers = _layers()
    x = torch.randn(B, 11, D)
    for name, layer in layers.items():
        y, state = layer(x, None, 0)
        assert y.shape == x.shape and y.dtype == torch.float32, name
        assert all(t.dtype == torch.float32 for t in state.values()), name
    assert set(layers["block"](x, None, 0)[1]) == {"hologram", "buffer"}
    assert layers["mixer"](x, None, 0)[1]["hologram"].shape == (B, D)
    gate = layers["gate"]
    assert gate(x, None, 0)[1]["buffer"].shape == (B, 11, D)  # the inputs seen, fewer than N − 1
    assert gate(torch.randn(B, 2 * N, D), None, 0)[1]["buffer"].shape == (B, N - 1, D)


@pytest.mark.parametrize("name", LAYERS)
def test_seed_call_form_returns_the_tensor(name):
    """The original's layer(x) returns y alone, the same y as the model's layer(x, None, 0); a state
    without its position is refused rather than read at position 0."""
    layer = _layers()[name]
    x = torch.randn(B, 11, D)
    y = layer(x)
    assert isinstance(y, torch.Tensor) and y.shape == x.shape
    y_model, state = layer(x, None, 0)
    assert torch.equal(y, y_model)
    with pytest.raises(ValueError, match="a state needs its position"):
        layer(x, state)


@pytest.mark.parametrize("decay", [None, 0.9])
def test_mixer_matches_float64_reference(decay):
    layer = HolographicMixer(D, decay=decay)
    x = torch.randn(B, 37, D)
    y, state = layer(x, None, 0)
    y_ref, h_ref = _mixer_ref(layer, x)
    assert_close(y, y_ref, 1e-5, "y")
    assert_close(state["hologram"], h_ref, 1e-5, "hologram")
    more = torch.randn(B, 5, D)
    y, _ = layer(more, state, position=37)  # continued: scaled by 1/sqrt(n_t) at t = 37 .. 41
    assert_close(y, _mixer_ref(layer, torch.cat([x, more], 1))[0][:, 37:], 1e-5, "continued")


def test_mixer_retrieval_does_not_grow_with_context():
    """Without the 1/sqrt(t+1) the seed's cumsum retrieval grows like sqrt(t); ours stays flat."""
    layer = HolographicMixer(D)
    y = layer(torch.randn(1, 4096, D))
    early, late = y[:, 16:64].pow(2).mean().sqrt(), y[:, -512:].pow(2).mean().sqrt()
    assert 0.5 < late / early < 2, (early, late)


def test_gate_kernel_has_the_seed_frequency_response():
    gate = _randomise(SpectralGate(N))
    h = gate.kernel()
    assert h.shape == (N,)
    assert_close(h, _kernel_ref(gate.gate.detach(), N), 1e-6, "kernel")
    assert_close(torch.fft.rfft(h.double()).real, torch.sigmoid(gate.gate.detach().double()),
                 1e-6, "response")
    assert torch.allclose(h[1:], h[1:].flip(0), atol=1e-7)  # zero phase: h_j = h_{N−j}
    odd = _randomise(SpectralGate(15))
    assert odd.gate.numel() == 8 and odd.kernel().shape == (15,)
    assert_close(odd.kernel(), _kernel_ref(odd.gate.detach(), 15), 1e-6, "odd kernel")


def test_gate_init_is_half_identity():
    gate = SpectralGate(N)
    assert gate.gate.numel() == N // 2 + 1 and torch.equal(gate.gate, torch.zeros(N // 2 + 1))
    expected = torch.zeros(N)
    expected[0] = 0.5
    assert torch.allclose(gate.kernel(), expected, atol=1e-7)
    x = torch.randn(B, 20, D)
    assert torch.allclose(gate(x), 0.5 * x, atol=1e-6)


@torch.no_grad()
def test_seed_gate_leaks_the_future_and_ours_is_its_causal_version():
    """At T = N the seed's gate is a circular convolution with our kernel h: y_0 depends on the
    last token. Ours is the linear (zero padded) convolution with the same h."""
    gate = _randomise(SpectralGate(N))
    g, h = gate.gate, gate.kernel()
    x = torch.randn(B, N, D)
    seed, ours = _seed_spectral_gate(x, g), gate(x)
    j = torch.arange(N)
    circ = torch.stack([(h[:, None] * x[:, (t - j) % N]).sum(1) for t in range(N)], 1)
    lin = torch.stack([(h[: t + 1, None] * x[:, t - j[: t + 1]]).sum(1) for t in range(N)], 1)
    assert_close(seed, circ, 1e-5, "seed gate = circular conv with h")
    assert_close(ours, lin, 1e-5, "our gate = causal conv with h")
    x2 = x.clone()
    x2[:, -1] += 1.0  # change only the last token
    leak = (_seed_spectral_gate(x2, g)[:, 0] - seed[:, 0]).abs().max()  # seed: y_0 moves
    change = (gate(x2)[:, :-1] - ours[:, :-1]).abs().max()  # ours: FFT rounding only
    assert leak > 1e-3 and change < 1e-6 * ours.abs().max(), (leak, change)


@torch.no_grad()
def test_gate_beyond_max_seq_len_drops_older_taps():
    """T = 70 > N = 32: y_t sums the last N inputs only (taps beyond N are zero)."""
    gate = _randomise(SpectralGate(32))
    x = torch.randn(B, 70, D, dtype=torch.float64)
    h = _kernel_ref(gate.gate, 32)
    ref = torch.stack([sum(h[j] * x[:, t - j] for j in range(min(t + 1, 32))) for t in range(70)],
                      1)
    assert_close(gate(x), ref, 1e-6, "T > max_seq_len")


@pytest.mark.parametrize("name", LAYERS)
def test_full_equals_prefix_rest_and_token_by_token(name):
    layer = _layers()[name]
    x = torch.randn(B, 37, D)
    y, state, grads = loss_and_grads(layer, x, [37])
    for lengths in ([20, 17], [1] * 37, [3, 1, 30, 1, 2]):
        y2, state2, grads2 = loss_and_grads(layer, x, lengths)
        assert_close(y2, y, 1e-5, f"{name} {lengths} y")
        assert state2.keys() == state.keys()
        for key in state:
            assert_close(state2[key], state[key], 1e-5, f"{name} {lengths} state {key}")
        for g2, g in zip(grads2, grads, strict=True):
            assert_close(g2, g, 1e-5, f"{name} {lengths} grad")


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.float64, 1e-14)])
@pytest.mark.parametrize("name", LAYERS)
@torch.no_grad()
def test_causal_by_perturbation(name, dtype, tol):
    """Changing x after t leaves y up to t unchanged — bit for bit without FFTs over time, and up
    to FFT rounding (relative to max |y|, the whole signal's scale) with the gate's FFT
    convolution; a leak would change them by O(1) (see the seed's gate above)."""
    layer = _layers()[name].to(dtype)
    x = torch.randn(B, 40, D, dtype=dtype)
    y = layer(x)
    for t in (0, 17, 38):
        x2 = x.clone()
        x2[:, t + 1:] += torch.randn_like(x2[:, t + 1:])
        y2 = layer(x2)
        change = ((y2[:, :t + 1] - y[:, :t + 1]).abs().max() / y.abs().max()).item()
        assert change <= (0.0 if name.startswith("mixer") else tol), (name, t, change)
        assert not torch.allclose(y2[:, t + 1:], y[:, t + 1:])


@pytest.mark.parametrize("fresh", [False, True], ids=["trained_like", "at_init"])
@pytest.mark.parametrize("name", LAYERS)
def test_gradients_reach_every_parameter(name, fresh):
    layer = _layers()[name]
    if fresh:  # the init (gate logits 0, scale 0.1) is no dead point
        for module in layer.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    _, _, grads = loss_and_grads(layer, torch.randn(B, 25, D), [25])
    for (pname, _), g in zip(layer.named_parameters(), grads[1:], strict=True):
        assert torch.isfinite(g).all() and g.abs().sum() > 0, f"{name}.{pname}"


@pytest.mark.parametrize("name", LAYERS)
@torch.no_grad()
def test_bf16_runs_finite_and_close_to_fp32(name):
    """bf16 parameters and activations, float32 states; within 3e-2 relative RMS of fp32."""
    layer = _layers()[name]
    x = torch.randn(B, 37, D)
    ref = layer(x)
    half = layer.to(torch.bfloat16)
    y, state = half(x.bfloat16(), None, 0)
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()
    # the short conv's buffer holds inputs, in their dtype
    assert all(t.dtype == (torch.bfloat16 if key == "conv" else torch.float32)
               for key, t in state.items())
    assert_close(y.float(), ref, 3e-2, f"{name} bf16 vs fp32")
    y2, _ = run_pieces(half, x.bfloat16(), [30] + [1] * 7)  # decoding with float32 states
    assert_close(y2.float(), y.float(), 1e-2, f"{name} bf16 pieces")


@pytest.mark.parametrize("name", ["mixer", "mixer_decay", "block", "block_conv"])
def test_state_bytes_match_the_state_and_stay_bounded(name):
    """The stateful layers' `state_bytes(batch_size, context_len)` (the gate's buffer is the
    block's)."""
    layer = _layers()[name]
    with torch.no_grad():
        for T in (5, 70):
            _, state = layer(torch.randn(3, T, D), None, 0)
            assert state_nbytes(state) == layer.state_bytes(3, T)
    # flat from N − 1 tokens on (the gate's buffer holds the inputs seen until then)
    assert layer.state_bytes(1, N - 1) == layer.state_bytes(1, 10**6)
    assert layer.state_bytes(1, 10) <= layer.state_bytes(1, 10**6)
    if name == "mixer":
        assert layer.state_bytes(2, 1) == 2 * D * 4


def test_lite_channel_mix_and_parameter_counts():
    mix = LiteChannelMix(D, RANK)
    assert sum(p.numel() for p in mix.parameters()) == 2 * D * RANK + D
    assert torch.equal(mix.scale, torch.full((D,), SCALE_INIT))
    assert mix.down.weight.shape == (RANK, D) and mix.up.weight.shape == (D, RANK)
    _randomise(mix)
    x = torch.randn(B, 7, D)
    expected = x + mix.scale * (torch.nn.functional.gelu(x @ mix.down.weight.T) @ mix.up.weight.T)
    assert_close(mix(x), expected, 1e-6, "channel mix")
    assert_close(mix(x) - x, mix.branch(x), 1e-6, "branch")
    assert sum(p.numel() for p in HolographicMixer(D).parameters()) == 2 * D
    for n in (16, 15, 512):
        block = HoloSpectralBlock(D, n, RANK)
        assert sum(p.numel() for p in block.parameters()) == 9 * D + 2 * D * RANK + n // 2 + 1


@torch.no_grad()
def test_block_is_the_three_pre_ln_branches():
    block = _randomise(HoloSpectralBlock(D, N, RANK))
    x = torch.randn(B, 21, D)
    h = x + block.mixer(block.mixer_norm(x))
    h = h + block.gate(block.gate_norm(h))
    h = h + block.channel_mix.scale * block.channel_mix.up(
        torch.nn.functional.gelu(block.channel_mix.down(block.channel_norm(h))))
    assert_close(block(x), h, 1e-6, "block")

    conv = _randomise(HoloSpectralBlock(D, N, RANK, conv_size=3))
    window = torch.nn.functional.pad(conv.mixer_norm(x), (0, 0, 2, 0))  # causal: 2 zeros first
    w, b = conv.conv.conv.weight[:, 0], conv.conv.conv.bias  # [d, 3], [d]
    mixed = torch.nn.functional.silu(sum(window[:, j:j + 21] * w[:, j] for j in range(3)) + b)
    h = x + conv.mixer(mixed)
    h = h + conv.gate(conv.gate_norm(h))
    h = h + conv.channel_mix.branch(conv.channel_norm(h))
    assert_close(conv(x), h, 1e-6, "block with the short conv")


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="decay"):
        HolographicMixer(D, decay=1.0)
    with pytest.raises(ValueError, match="decay"):
        HolographicMixer(D, decay=0)
    with pytest.raises(ValueError, match="max_seq_len"):
        SpectralGate(0)
    with pytest.raises(ValueError, match="rank"):
        LiteChannelMix(D, 0)
    mixer, gate, block = HolographicMixer(D), SpectralGate(N), HoloSpectralBlock(D, N, RANK)
    with pytest.raises(ValueError, match=r"\[B, T, 32\]"):
        mixer(torch.randn(B, 5, D + 1))
    with pytest.raises(ValueError, match=r"\[B, T, 32\]"):
        block(torch.randn(5, D))
    with pytest.raises(ValueError, match="T >= 1"):
        gate(torch.randn(B, 0, D))
    with pytest.raises(TypeError, match="torch.Tensor"):
        mixer([[1.0] * D])
    with pytest.raises(ValueError, match="position"):
        mixer(torch.randn(B, 5, D), position=-1)
    with pytest.raises(ValueError, match="hologram"):
        mixer(torch.randn(B, 5, D), {"hologram": torch.zeros(B + 1, D)}, position=3)
    with pytest.raises(TypeError, match="hologram"):
        mixer(torch.randn(B, 5, D), {"hologram": torch.zeros(B, D, dtype=torch.bfloat16)}, 3)
    with pytest.raises(ValueError, match="initial_state"):
        gate(torch.randn(B, 5, D), {"buffer": torch.zeros(B, N, D)}, position=3)


PACKED = ((5, 1, 9, 3), (18,))  # row 0 packs four documents (one of a single token)


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("name", LAYERS)
def test_packed_documents_equal_each_alone(name, padded):
    """Each document of a packed row gets the outputs and gradients it gets alone, and the
    state handed on is its last document's: the bundle, the ages and the n_t counts, the gate's
    causal convolution over max_seq_len (16) tokens and the short conv all restart."""
    torch.manual_seed(0)
    assert_packed_equals_alone(_layers()[name], torch.randn(2, 18, D), PACKED, 1e-5, padded)


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("name", LAYERS)
def test_packed_pieces_equal_the_full_packed_forward(name, padded):
    """Chunks that cut documents, single tokens among them (the decoding step): the outputs and
    the final state equal the whole packed forward."""
    torch.manual_seed(0)
    layer, x, pad = _layers()[name], torch.randn(2, 18, D), packed(PACKED, padded)
    y, state = layer(x, None, 0, pad=pad)
    y2, state2 = run_packed(layer, x, pad, [4, 1, 1, 7, 1, 4])
    assert_close(y2, y, 1e-5, "y")
    for key in state:
        assert_close(state2[key], state[key], 1e-5, key)
