"""Bad input to every public model, layer and op fails loudly, and good input of any shape,
dtype or length gives the right answer.

Attacks (each passes against hololm and fails against a naive implementation, which would
compute on, broadcast, or crash with an unrelated RuntimeError deep inside torch):
- models: ids out of [0, vocab) / negative / float / 3-D / empty / not a tensor, padded masks,
  labels out of range or misshaped, a cache of another batch size or another model,
  inputs_embeds: TypeError / ValueError naming the argument and the allowed range;
- layers called directly (every mixer, MLPs, short conv, rotary): x of the wrong type, dtype,
  rank, width or length, a bf16 x into fp32 weights outside autocast, a bad `position`, a state
  of another batch size, with missing or foreign keys, or not a dict;
- ops: wrong dtypes, shapes, lengths, chunk sizes, narrower state dtypes.
Properties (hypothesis, derandomized): over random shapes, dtypes, lengths and split points the
fast ops equal their reference loops and continuing from a state equals one pass; streaming
through a `HoloCache` in any chunking equals the full forward pass for every family.
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hololm.layers.attention import CausalSelfAttention
from hololm.layers.long import LongAttentionV5
from hololm.layers.matrix import MatrixMemory
from hololm.layers.mlp import GatedMLP, GeluMLP
from hololm.layers.phasor import PhasorAttention
from hololm.layers.rotary import RotaryEmbedding
from hololm.layers.short_conv import ShortConv
from hololm.layers.spectral import HolographicMixer, HoloSpectralBlock, LiteChannelMix, SpectralGate
from hololm.models import HoloSpectralConfig, HoloSpectralForCausalLM, HoloSpectralNet
from hololm.models.cache import cache_of
from hololm.models.presets import build_model
from hololm.models.registry import NAMES as MODEL_TYPES
from hololm.ops import (
    blocked_cumsum,
    causal_conv_ref,
    causal_conv_step,
    causal_fft_conv,
    circular_conv_ref,
    circular_corr_ref,
    cumsum,
    fft_circular_conv,
    fft_circular_corr,
    gated_diagonal_scan,
    gated_diagonal_scan_ref,
    gated_diagonal_scan_step,
    gated_matrix_memory,
    gated_matrix_memory_step,
    generate_random_phasors,
    holo_scan,
    phasor_memory,
    phasor_memory_ref,
    phasor_memory_step,
)
from hololm.originals import HoloTransformer
from tests.helpers import rel_rms
from tests.models.conftest import tiny_model
from tests.models.helpers import VOCAB, assert_refuses_bad_inputs, ids

PROPERTY = settings(max_examples=30, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
HALF = (torch.float16, torch.bfloat16)
DTYPES = st.sampled_from([torch.float32, torch.float64, torch.bfloat16, torch.float16])


def _tol(dtype: torch.dtype) -> float:
    """Ops compute in float64 for float64 inputs, else float32 (half inputs included)."""
    return 1e-9 if dtype == torch.float64 else 2e-5


def _close(a: torch.Tensor, b: torch.Tensor, tol: float, what: str) -> None:
    err = rel_rms(a, b)
    assert err <= tol, f"{what}: relative RMS error {err:.2e} > {tol:.0e}"



def tiny_hsn() -> HoloSpectralForCausalLM:
    config = HoloSpectralConfig(vocab_size=VOCAB, dim=32, depth=2, max_seq_len=8, rank=4)
    return HoloSpectralForCausalLM(config).eval()


FAMILIES = ("holo", "long", "hologpt", "hsn")


@functools.cache
def model_of(family: str) -> torch.nn.Module:
    """One tiny model per family (hybrids: an attention layer too), built once per session."""
    torch.manual_seed(0)
    return tiny_hsn() if family == "hsn" else tiny_model(family, hybrid=True)


@pytest.mark.parametrize("family", FAMILIES)
def test_models_refuse_bad_ids_masks_and_caches(family):
    assert_refuses_bad_inputs(model_of(family))


@pytest.mark.parametrize("family", FAMILIES)
def test_models_refuse_bad_labels_and_embeds(family):
    model, x = model_of(family), ids(2, 6)
    with pytest.raises(ValueError, match=rf"labels must lie in \[0, {VOCAB}\).*-100"):
        model(x, labels=torch.full_like(x, VOCAB))
    with pytest.raises(ValueError, match=r"labels must lie in .* got -5"):
        model(x, labels=torch.full_like(x, -5))
    with pytest.raises(TypeError, match="labels must be an integer tensor"):
        model(x, labels=x.float())
    with pytest.raises(ValueError, match=r"labels must have the shape of input_ids \(2, 6\)"):
        model(x, labels=x[:, :5])
    with pytest.raises(TypeError, match="inputs_embeds"):  # not an argument: token ids only
        model(x, inputs_embeds=torch.zeros(2, 6, 32))
    labels = x.clone()
    labels[:, :3] = -100  # ignored positions are fine
    assert torch.isfinite(model(x, labels=labels).loss)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_model_cast_in_part_names_the_weight(family):
    """One layer cast to bf16 failed with torch's RuntimeError about mixed dtypes."""
    model = copy.deepcopy(model_of(family))  # not the shared one
    model.model.layers[0].to(torch.bfloat16)
    with pytest.raises(TypeError, match=r"weights mix dtypes: layers\.0\..* is torch\.bfloat16"):
        model(ids(1, 4))


@pytest.mark.parametrize("family", FAMILIES)
def test_a_cache_continues_only_the_model_that_filled_it(family):
    """Another family's (or another width's) states would be read with the wrong layout."""
    other = model_of("long" if family != "long" else "holo")
    with torch.no_grad():
        cache = cache_of(other(ids(1, 4), use_cache=True))
    with pytest.raises(ValueError, match="filled by another model"):
        model_of(family)(ids(1, 1), past_key_values=cache)


def test_front_doors_validate_too():
    with pytest.raises(TypeError, match="integer tensor"):
        HoloTransformer(model_of("holo").config)(torch.rand(1, 4))
    net = HoloSpectralNet(vocab_size=VOCAB, dim=16, depth=1, max_seq_len=8, rank=2)
    with pytest.raises(ValueError, match=rf"\[0, {VOCAB}\)"):
        net(torch.tensor([[VOCAB]]))
    with pytest.raises(ValueError, match="return_dict=True"):
        net(ids(1, 3), labels=ids(1, 3))


def test_unknown_model_types_and_sizes_list_the_choices():
    with pytest.raises(ValueError, match=r"unknown model_type 'rwkv'; choose from \('holo'"):
        build_model("rwkv", "tiny", VOCAB, 32)
    with pytest.raises(ValueError, match=r"unknown model_size 'huge'; choose from \('tiny'"):
        build_model(MODEL_TYPES[0], "huge", VOCAB, 32)



D = 16
MIXERS = {
    "attention": lambda: CausalSelfAttention(D, 2),
    "phasor": lambda: PhasorAttention(D, 32, 2),
    "phasor-dual": lambda: PhasorAttention(D, 32, 2, dual_path=True, learned_query_offset=True),
    "long": lambda: LongAttentionV5(D, 2),
    "matrix": lambda: MatrixMemory(D, 8, 2),
    "hsn-block": lambda: HoloSpectralBlock(D, 8, 4, decay=0.9),
    "holographic": lambda: HolographicMixer(D),
}


@pytest.fixture(params=list(MIXERS))
def mixer(request):
    torch.manual_seed(0)
    return MIXERS[request.param]().eval()


def test_mixers_refuse_bad_x_and_position(mixer):
    x = torch.randn(2, 5, D)
    for bad, error, message in [
        (x.tolist(), TypeError, "x must be a torch.Tensor"),
        (x.long(), TypeError, "x must be a floating tensor"),
        (x[0], ValueError, rf"x must have shape \[B, T, {D}\]"),
        (x[..., :-1], ValueError, rf"x must have shape \[B, T, {D}\].*\(2, 5, {D - 1}\)"),
        (x[:, :0], ValueError, "T >= 1"),
    ]:
        with pytest.raises(error, match=message):
            mixer(bad)
    for position in (-1, 1.5, True, "3"):
        with pytest.raises(ValueError, match=r"position must be an int >= 0"):
            mixer(x, None, position)


def test_mixers_refuse_a_state_of_another_batch_or_layout(mixer):
    with torch.no_grad():
        y, state = mixer(torch.randn(2, 5, D), None, 0)
        # a state from two rows continued with three: a cat / broadcast error or a wrong answer
        for T in (1, 3):
            with pytest.raises(ValueError, match=r"holds a batch of 2 but x has batch 3"):
                mixer(torch.randn(3, T, D), state, 5)
        with pytest.raises(ValueError, match="state must hold the keys"):
            mixer(torch.randn(2, 1, D), {"typo": next(iter(state.values()))}, 5)
        with pytest.raises(ValueError, match="state must hold the keys"):  # one key dropped
            mixer(torch.randn(2, 1, D), dict(list(state.items())[1:]) or {"x": y}, 5)
        with pytest.raises(TypeError, match="state must be a dict"):
            mixer(torch.randn(2, 1, D), list(state.values()), 5)


def test_mixers_refuse_mixed_dtypes_outside_autocast(mixer):
    x = torch.randn(2, 5, D)
    if isinstance(mixer, HolographicMixer):  # parameter-free in x's dtype: computes in fp32
        assert mixer(x.bfloat16(), None, 0)[0].dtype == torch.bfloat16
        return
    with pytest.raises(TypeError, match=r"x has dtype torch.bfloat16 but the layer's weights "
                                        r"are torch.float32.*autocast"):
        mixer(x.bfloat16())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, _ = mixer(x.bfloat16(), None, 0)
    assert torch.isfinite(y.float()).all()
    bf16 = mixer.to(torch.bfloat16)
    with pytest.raises(TypeError, match="weights are torch.bfloat16"):
        bf16(x)


def test_mixers_still_continue_exactly_from_their_state(mixer):
    """The checks do not get in the way: prefill 5, then 3 one by one == one pass over 8."""
    x = torch.randn(2, 8, D, dtype=torch.float64)
    mixer = mixer.double()
    with torch.no_grad():
        full, _ = mixer(x, None, 0)
        ys, state = [], None
        y, state = mixer(x[:, :5], None, 0)
        ys.append(y)
        for t in range(5, 8):
            y, state = mixer(x[:, t:t + 1], state, t)
            ys.append(y)
    _close(torch.cat(ys, 1), full, 1e-10, "continued from the state")


@pytest.mark.parametrize("layer", [
    ShortConv(D, 4), GatedMLP(D, 32), GeluMLP(D, 32), LiteChannelMix(D, 4),
], ids=["short-conv", "gated-mlp", "gelu-mlp", "channel-mix"])
def test_other_layers_refuse_bad_x(layer):
    x = torch.randn(2, 5, D)
    with pytest.raises(ValueError, match=rf"x must have shape \[B, T, {D}\]"):
        layer(torch.randn(2, 5, D + 2))
    with pytest.raises(TypeError, match="x must be a floating tensor"):
        layer(x.long())
    with pytest.raises(TypeError, match="weights are torch.float32"):
        layer(x.half())


def test_short_conv_and_rotary_refuse_bad_states_and_widths():
    conv = ShortConv(D, 4)
    with pytest.raises(ValueError, match=rf"state must be a tensor of shape \(2, 3, {D}\)"):
        conv(torch.randn(2, 5, D), torch.zeros(3, 3, D))
    rotary = RotaryEmbedding(8)
    with pytest.raises(ValueError, match=r"x must have shape \[B, T, \.\.\., 8\]"):
        rotary(torch.randn(1, 4, 2, 6))
    with pytest.raises(TypeError, match="floating"):
        rotary(torch.ones(1, 4, 2, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="even dim"):
        RotaryEmbedding(7)


def test_spectral_gate_refuses_int_x_and_foreign_state():
    gate = SpectralGate(8)
    with pytest.raises(TypeError, match="floating"):
        gate(torch.ones(1, 4, D, dtype=torch.long))
    _, state = gate(torch.randn(2, 4, D), None, 0)
    with pytest.raises(ValueError, match="holds a batch of 2"):
        gate(torch.randn(1, 1, D), state, 4)
    with pytest.raises(TypeError, match="dtype torch.float32"):
        gate(torch.randn(2, 1, D), {"buffer": state["buffer"].bfloat16()}, 4)



def test_ops_refuse_bad_arguments_naming_them():
    x = torch.randn(1, 4, 2, 3)
    with pytest.raises(TypeError, match="x must be a real floating tensor"):
        gated_diagonal_scan(x.long(), -x.abs())
    with pytest.raises(ValueError, match=r"log_decay must have shape \(1, 4, 2, 3\)"):
        gated_diagonal_scan(x, -x.abs()[:, :3])
    with pytest.raises(ValueError, match="at least one time step"):
        gated_diagonal_scan(x[:, :0], x[:, :0])
    with pytest.raises(ValueError, match="chunk_size must be"):
        gated_diagonal_scan(x, -x.abs(), chunk_size=1)
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        gated_diagonal_scan(x, -x.abs(), chunk_size=True)
    with pytest.raises(TypeError, match=r"initial_state must have dtype torch.float32"):
        gated_diagonal_scan(x, -x.abs(), torch.zeros(1, 2, 3, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match=r"state must have shape \(1, 2, 3\)"):
        gated_diagonal_scan_step(x[:, 0], -x[:, 0].abs(), torch.zeros(2, 2, 3))
    q = torch.randn(1, 4, 2, 3)
    with pytest.raises(ValueError, match=r"v must have shape \(1, 4, 2\) \+ \(Dv,\)"):
        gated_matrix_memory(q, q, q[:, :3], -q[..., 0].abs())
    with pytest.raises(ValueError, match="log_forget must have 3 dims"):
        gated_matrix_memory(q, q, q, -q.abs())
    with pytest.raises(TypeError, match="read_before_write must be a bool"):
        gated_matrix_memory_step(q[:, 0], q[:, 0], q[:, 0], -q[:, 0, :, 0].abs(),
                                 read_before_write=1)
    freqs = generate_random_phasors(6)
    with pytest.raises(ValueError, match=r"freqs must have shape \(2, 3\) or \(6,\)"):
        phasor_memory(q, q, q, freqs[:5])
    with pytest.raises(ValueError, match="position must be a non-negative int"):
        phasor_memory_step(q[:, 0], q[:, 0], q[:, 0], None, -1, freqs)
    with pytest.raises(TypeError, match=r"initial_state must have dtype torch.complex64"):
        phasor_memory(q, q, q, freqs, initial_state=torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match="query_shift needs freqs"):
        phasor_memory(q, q, q, None, query_shift=torch.zeros(2))
    with pytest.raises(ValueError, match="kernel channel dims"):
        causal_fft_conv(torch.randn(1, 4, 3), torch.randn(5, 2))
    with pytest.raises(ValueError, match="K >= 1"):
        causal_fft_conv(torch.randn(1, 4, 3), torch.randn(0, 3))
    with pytest.raises(ValueError, match="same last dim"):
        fft_circular_conv(torch.randn(4), torch.randn(5))
    with pytest.raises(ValueError, match="do not broadcast"):
        fft_circular_corr(torch.randn(2, 4), torch.randn(3, 4))
    with pytest.raises(ValueError, match="dim=3 out of range"):
        cumsum(torch.randn(2, 3), dim=3)
    with pytest.raises(TypeError, match="dim must be an int"):
        blocked_cumsum(torch.randn(2, 3), dim=1.0)


def _tensor(shape, dtype, seed, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(shape, generator=gen, dtype=torch.float64)).to(dtype)


@PROPERTY
@given(B=st.integers(1, 2), T=st.integers(1, 70), H=st.integers(1, 2), Dh=st.integers(1, 4),
       chunk=st.integers(2, 17), split=st.floats(0, 1), dtype=DTYPES, seed=st.integers(0, 99))
def test_diagonal_scan_property(B, T, H, Dh, chunk, split, dtype, seed):
    x = _tensor((B, T, H, Dh), dtype, seed)
    log_decay = -_tensor((B, T, H, Dh), dtype, seed + 1, 3.0).abs()
    h_ref, last_ref = gated_diagonal_scan_ref(x, log_decay)
    h, last = gated_diagonal_scan(x, log_decay, chunk_size=chunk)
    _close(h, h_ref, _tol(dtype), "chunked scan vs loop")
    t = int(split * T)
    if 0 < t < T:  # the first t steps, then the rest from the state, equal one pass
        h1, s = gated_diagonal_scan(x[:, :t], log_decay[:, :t], chunk_size=chunk)
        h2, s = gated_diagonal_scan(x[:, t:], log_decay[:, t:], s, chunk_size=chunk)
        _close(torch.cat([h1, h2], 1), h_ref, _tol(dtype), "split scan")
        _close(s, last_ref, _tol(dtype), "split final state")
        step, _ = gated_diagonal_scan_step(x[:, t], log_decay[:, t], h1[:, -1])
        _close(step, h_ref[:, t], _tol(dtype), "step")


@PROPERTY
@given(B=st.integers(1, 2), T=st.integers(1, 40), H=st.integers(1, 2), Dk=st.integers(1, 4),
       Dv=st.integers(1, 4), chunk=st.integers(1, 9), split=st.floats(0, 1),
       rbw=st.booleans(), gated=st.booleans(), dtype=DTYPES, seed=st.integers(0, 99))
def test_matrix_memory_property(B, T, H, Dk, Dv, chunk, split, rbw, gated, dtype, seed):
    q, k = _tensor((B, T, H, Dk), dtype, seed), _tensor((B, T, H, Dk), dtype, seed + 1)
    v = _tensor((B, T, H, Dv), dtype, seed + 2)
    log_f = -_tensor((B, T, H), dtype, seed + 3, 2.0).abs()
    write = torch.sigmoid(_tensor((B, T, H), dtype, seed + 4)) if gated else None
    y_ref, s_ref = holo_scan(q, k, v, log_f, write, read_before_write=rbw)
    y, s = gated_matrix_memory(q, k, v, log_f, write, None, rbw, chunk)
    _close(y, y_ref, 10 * _tol(dtype), "chunkwise vs loop")
    _close(s, s_ref, 10 * _tol(dtype), "chunkwise final state")
    t = int(split * T)
    if 0 < t < T:
        w1, w2 = (None, None) if write is None else (write[:, :t], write[:, t:])
        y1, s1 = gated_matrix_memory(q[:, :t], k[:, :t], v[:, :t], log_f[:, :t], w1, None, rbw,
                                     chunk)
        y2, _ = gated_matrix_memory(q[:, t:], k[:, t:], v[:, t:], log_f[:, t:], w2, s1, rbw,
                                    chunk)
        _close(torch.cat([y1, y2], 1), y_ref, 10 * _tol(dtype), "split memory")
        y_t, _ = gated_matrix_memory_step(q[:, t], k[:, t], v[:, t], log_f[:, t],
                                          None if write is None else write[:, t], s1, rbw)
        _close(y_t, y_ref[:, t], 10 * _tol(dtype), "step")


@PROPERTY
@given(B=st.integers(1, 2), T=st.integers(1, 50), H=st.integers(1, 2), Dh=st.integers(1, 4),
       offset=st.sampled_from([0, 7, 2**20 + 3]), split=st.floats(0, 1),
       positional=st.booleans(), dtype=DTYPES, seed=st.integers(0, 99))
def test_phasor_memory_property(B, T, H, Dh, offset, split, positional, dtype, seed):
    v = _tensor((B, T, H, Dh), dtype, seed)
    phi, psi = (3 * torch.tanh(_tensor((B, T, H, Dh), dtype, seed + i)) for i in (1, 2))
    freqs = generate_random_phasors(H * Dh, seed=seed) if positional else None
    shift = _tensor((H,), torch.float32, seed + 3) if positional else None
    r_ref, m_ref = phasor_memory_ref(v, phi, psi, freqs, offset=offset, query_shift=shift)
    r, m = phasor_memory(v, phi, psi, freqs, offset=offset, query_shift=shift)
    _close(r, r_ref, 20 * _tol(dtype), "fast vs loop")
    _close(m, m_ref, 20 * _tol(dtype), "fast final memory")
    t = int(split * T)
    if 0 < t < T:
        r1, m1 = phasor_memory(v[:, :t], phi[:, :t], psi[:, :t], freqs, offset=offset,
                               query_shift=shift)
        r2, _ = phasor_memory(v[:, t:], phi[:, t:], psi[:, t:], freqs, offset=offset + t,
                              query_shift=shift, initial_state=m1)
        _close(torch.cat([r1, r2], 1), r_ref, 20 * _tol(dtype), "split memory")
        r_t, _ = phasor_memory_step(v[:, t], phi[:, t], psi[:, t], m1, offset + t, freqs, shift)
        _close(r_t, r_ref[:, t], 20 * _tol(dtype), "step")


@PROPERTY
@given(B=st.integers(1, 2), T=st.integers(1, 40), C=st.integers(1, 3), K=st.integers(1, 20),
       split=st.floats(0, 1), shared=st.booleans(), dtype=DTYPES, seed=st.integers(0, 99))
def test_causal_conv_property(B, T, C, K, split, shared, dtype, seed):
    x = _tensor((B, T, C), dtype, seed)
    kernel = _tensor((K,) if shared else (K, C), dtype, seed + 1)
    y_ref, s_ref = causal_conv_ref(x, kernel)
    y, s = causal_fft_conv(x, kernel)
    _close(y, y_ref, 10 * _tol(dtype), "fft conv vs loop")
    assert torch.equal(s, s_ref), "state: the last K - 1 inputs"
    t = int(split * T)
    if 0 < t < T:
        y1, s1 = causal_fft_conv(x[:, :t], kernel)
        y2, _ = causal_fft_conv(x[:, t:], kernel, s1)
        _close(torch.cat([y1, y2], 1), y_ref, 10 * _tol(dtype), "split conv")
        y_t, _ = causal_conv_step(x[:, t], kernel, s1)
        _close(y_t, y_ref[:, t], 10 * _tol(dtype), "step")


@PROPERTY
@given(lead=st.lists(st.integers(1, 3), max_size=2), Dn=st.integers(1, 33), dtype=DTYPES,
       seed=st.integers(0, 99))
def test_circular_ops_property(lead, Dn, dtype, seed):
    a, b = _tensor((*lead, Dn), dtype, seed), _tensor((Dn,), dtype, seed + 1)
    tol = 1e-9 if dtype == torch.float64 else (1e-2 if dtype in HALF else 1e-5)
    _close(fft_circular_conv(a, b), circular_conv_ref(a, b), tol, "conv")
    _close(fft_circular_corr(b, a), circular_corr_ref(b, a), tol, "corr")
    assert fft_circular_conv(a, b).dtype == dtype


@PROPERTY
@given(shape=st.lists(st.integers(1, 70), min_size=1, max_size=3), block=st.integers(1, 20),
       seed=st.integers(0, 99))
def test_cumsum_property(shape, block, seed):
    x = _tensor(shape, torch.float64, seed)
    for dim in range(len(shape)):
        expected = torch.cumsum(x, dim)
        _close(blocked_cumsum(x, dim, block), expected, 1e-12, "blocked")
        _close(cumsum(x, dim - len(shape)), expected, 1e-12, "cumsum, negative dim")


@PROPERTY
@given(family=st.sampled_from(FAMILIES), B=st.integers(1, 2),
       chunks=st.lists(st.integers(1, 12), min_size=1, max_size=5), seed=st.integers(0, 99))
def test_cache_streams_any_chunking_exactly(family, B, chunks, seed):
    """Prefilling in chunks of any lengths through a HoloCache (and a copy of it taken midway)
    gives the logits of one pass: states, positions and KV caches all line up."""
    model = model_of(family)
    T = sum(chunks)
    x = ids(B, T, seed=seed)
    with torch.no_grad():
        full = model(x, use_cache=False).logits
        cache, logits, start, fork = None, [], 0, None
        for n in chunks:
            out = model(x[:, start:start + n], past_key_values=cache, use_cache=True)
            cache, start = cache_of(out), start + n
            logits.append(out.logits)
            if fork is None and start < T:
                fork, fork_at = cache.copy(), start
        assert cache.seen_tokens == T and cache.batch_size == B
        _close(torch.cat(logits, 1), full, 1e-5, f"{family} streamed {chunks}")
        if fork is not None:  # the copy is untouched by the later chunks
            rest = model(x[:, fork_at:], past_key_values=fork, use_cache=True).logits
            _close(rest, full[:, fork_at:], 1e-5, f"{family} continued from a copy")
