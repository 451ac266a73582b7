from __future__ import annotations

from functools import partial

import pytest
import torch

from hololm.ops.long_conv import (
    _fast_fft_size,
    _SwapLastTwo,
    causal_conv_ref,
    causal_conv_step,
    causal_fft_conv,
)
from tests.helpers import assert_close, rel_rms

B, H, D = 2, 2, 3
SEQ_LENS = [1, 2, 63, 64, 65, 257]


def _taps(seq: int, which: str) -> int:
    return {"short": 4, "equal": seq, "long": seq + 5}[which]


def _inputs(seq: int, taps: int, dtype=torch.float32, with_state: bool = False):
    x = torch.randn(B, seq, H, D, dtype=dtype, requires_grad=True)
    kernel = (torch.randn(taps, H, D, dtype=dtype) / taps**0.5).requires_grad_()
    state = None
    if with_state:
        state = torch.randn(B, taps - 1, H, D, dtype=dtype, requires_grad=True)
    return x, kernel, state


def _chained_steps(x, kernel, state):
    ys = []
    for t in range(x.shape[1]):
        y_t, state = causal_conv_step(x[:, t], kernel, state)
        ys.append(y_t)
    return torch.stack(ys, dim=1), state


def _outputs_and_grads(fn, x, kernel, state, wy, ws):
    y, final = fn(x, kernel, state)
    leaves = [v for v in (x, kernel, state) if v is not None]
    grads = torch.autograd.grad((y * wy).sum() + (final * ws).sum(), leaves)
    return y, final, grads


@pytest.mark.parametrize("seq,taps", [(6, 3), (6, 6), (5, 9), (1, 1)])
def test_ref_is_the_definition(seq, taps):
    """y_t = Σ_{j=0}^{min(t, K−1)} kernel_j ⊙ x_{t−j}, written as a double loop."""
    x, kernel, _ = _inputs(seq, taps, torch.float64)
    want = torch.zeros_like(x)
    for t in range(seq):
        for j in range(min(t, taps - 1) + 1):
            want[:, t] += kernel[j] * x[:, t - j]
    y, state = causal_conv_ref(x, kernel)
    assert_close(y, want, 1e-15, "ref")
    assert state.shape == (B, min(taps - 1, seq), H, D)  # inputs before the start: not stored
    assert_close(causal_fft_conv(x, kernel)[0], want, 1e-13, "fft")


@pytest.mark.parametrize("seq", SEQ_LENS)
@pytest.mark.parametrize("which", ["short", "equal", "long"])
@pytest.mark.parametrize("with_state", [False, True])
def test_three_forms_agree(seq, which, with_state):
    """ref, fft and chained steps: outputs, final state and gradients wrt x, kernel and the
    initial state, in float32."""
    taps = _taps(seq, which)
    x, kernel, state = _inputs(seq, taps, with_state=with_state)
    held = min(taps - 1, seq + (taps - 1 if with_state else 0))
    wy, ws = torch.randn(B, seq, H, D), torch.randn(B, held, H, D)
    y_ref, s_ref, g_ref = _outputs_and_grads(causal_conv_ref, x, kernel, state, wy, ws)
    for fn in (causal_fft_conv, _chained_steps):
        y, s, grads = _outputs_and_grads(fn, x, kernel, state, wy, ws)
        what = f"{fn.__name__} T={seq} K={taps}"
        assert y.dtype == s.dtype == torch.float32
        assert_close(y, y_ref, 1e-5, what)
        assert_close(s, s_ref, 1e-6, what + " state")
        for name, g, g0 in zip(["x", "kernel", "state"], grads, g_ref, strict=False):
            assert_close(g, g0, 1e-5, f"{what} grad {name}")


@pytest.mark.parametrize("seq", [65, 257])
def test_float64_agrees_exactly(seq):
    x, kernel, state = _inputs(seq, seq, torch.float64, with_state=True)
    y_ref, s_ref = causal_conv_ref(x, kernel, state)
    y, s = causal_fft_conv(x, kernel, state)
    assert y.dtype == torch.float64
    assert_close(y, y_ref, 1e-13, "fft")
    assert_close(s, s_ref, 0.0, "state")


@pytest.mark.parametrize("taps", [1, 5, 40])
def test_prefill_then_steps_then_chunk(taps):
    """A prompt through the fft form, a few decoding steps, then a chunk with the carried state:
    the same outputs and state as one pass over the whole sequence."""
    x, kernel, _ = _inputs(30, taps)
    y_full, s_full = causal_conv_ref(x, kernel)
    y_a, state = causal_fft_conv(x[:, :12], kernel)
    y_b, state = _chained_steps(x[:, 12:17], kernel, state)
    y_c, state = causal_fft_conv(x[:, 17:], kernel, state)
    assert state.shape == (B, min(taps - 1, 30), H, D)
    assert_close(torch.cat([y_a, y_b, y_c], dim=1), y_full, 1e-5, "outputs")
    assert_close(state, s_full, 1e-6, "state")


@pytest.mark.parametrize("held", [0, 3, 7])
def test_a_short_state_is_the_zero_padded_one(held):
    """A state of S < K − 1 inputs means zeros before them: every form gives what the full
    K − 1 state with those zeros gives, and none keeps more than K − 1 inputs."""
    taps = 9
    x, kernel, _ = _inputs(5, taps)
    short = torch.randn(B, held, H, D)
    full = torch.cat([torch.zeros(B, taps - 1 - held, H, D), short], dim=1)
    y_want, s_want = causal_conv_ref(x, kernel, full)
    for fn in (causal_conv_ref, causal_fft_conv, _chained_steps):
        y, s = fn(x, kernel, short)
        assert s.shape == (B, min(taps - 1, held + 5), H, D)
        assert_close(y, y_want, 1e-5, fn.__name__)
        assert_close(s, s_want[:, taps - 1 - s.shape[1]:], 1e-6, fn.__name__ + " state")


def test_a_state_longer_than_the_kernel_is_refused():
    x, kernel, _ = _inputs(5, 4)
    for fn in (causal_conv_ref, causal_fft_conv):
        with pytest.raises(ValueError, match="initial_state"):
            fn(x, kernel, torch.randn(B, 4, H, D))


def test_taps_beyond_the_sequence_are_ignored():
    x, kernel, _ = _inputs(10, 25)
    changed = kernel.detach().clone()
    changed[10:] = torch.randn(15, H, D)
    assert_close(causal_fft_conv(x, changed)[0], causal_fft_conv(x, kernel)[0], 1e-6, "fft")
    assert_close(causal_conv_ref(x, changed)[0], causal_conv_ref(x, kernel)[0], 0.0, "ref")


@pytest.mark.parametrize("kernel_shape", [(7, D), (7, 1, D), (7, H, 1), (7, 1, 1)])
def test_kernel_broadcasts_over_channels(kernel_shape):
    x = torch.randn(B, 20, H, D)
    kernel = torch.randn(kernel_shape)
    full = kernel.reshape(7, *[1] * (3 - len(kernel_shape)), *kernel_shape[1:]).expand(7, H, D)
    want = causal_conv_ref(x, full)[0]
    for fn in (causal_conv_ref, causal_fft_conv, _chained_steps):
        assert_close(fn(x, kernel, None)[0], want, 1e-5, f"{fn.__name__} {kernel_shape}")


def test_channel_free_input():
    """x [B, T] with kernel [K]: no channel dims at all."""
    x, kernel = torch.randn(B, 33), torch.randn(9)
    y, state = causal_fft_conv(x, kernel)
    assert y.shape == (B, 33) and state.shape == (B, 8)
    assert_close(y, causal_conv_ref(x, kernel)[0], 1e-5, "fft")


@pytest.mark.parametrize("shape", [(2, 5, 3), (3, 90, 70)])
def test_swap_is_an_exact_transpose(shape):
    """Both sizes: below and above the numel where torch's blocked 2-D transpose copy kicks in;
    a non-contiguous input included."""
    x = torch.randn(shape[0], shape[2], shape[1]).transpose(1, 2).requires_grad_()
    y = _SwapLastTwo.apply(x)
    assert y.is_contiguous() and torch.equal(y, x.transpose(1, 2))
    w = torch.randn_like(y)
    (grad,) = torch.autograd.grad((y * w).sum(), x)
    assert torch.equal(grad, w.transpose(1, 2))


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.float64, 1e-14)])
@pytest.mark.parametrize("which", ["short", "equal"])
def test_causality_by_perturbation(dtype, tol, which):
    """Changing x after t leaves y up to t unchanged up to FFT rounding, which is relative to the
    size of the whole signal, hence the scale max |y|."""
    seq = 65
    x, kernel, _ = _inputs(seq, _taps(seq, which), dtype)
    y = causal_fft_conv(x, kernel)[0].detach()
    for t in [0, 1, 31, 63]:
        x2 = x.detach().clone()
        x2[:, t + 1:] = torch.randn(B, seq - t - 1, H, D, dtype=dtype)
        y2 = causal_fft_conv(x2, kernel)[0].detach()
        change = (y2[:, :t + 1] - y[:, :t + 1]).abs().max() / y.abs().max()
        assert change <= tol, (t, change)
        assert rel_rms(y2[:, t + 1:], y[:, t + 1:]) > 0.1, t


def _seed_spectral_gate(x: torch.Tensor, freq_gate: torch.Tensor) -> torch.Tensor:
    """The seed's SpectralGate: rfft over time, gate, irfft."""
    x_freq = torch.fft.rfft(x, dim=1)
    x_gated = x_freq * torch.sigmoid(freq_gate)
    return torch.fft.irfft(x_gated, n=x.shape[1], dim=1)


def test_seed_spectral_gate_leaks_the_future_and_ours_does_not():
    """Gating the spectrum of the whole sequence is a circular convolution with the impulse
    response h = irfft(sigmoid(gate)): output 0 mixes in the last tokens. It is exactly our causal
    convolution run over the sequence repeated twice (the second copy sees the first as its past),
    and causal_fft_conv with the same h is its causal counterpart."""
    seq = 64
    x = torch.randn(B, seq, H * D, dtype=torch.float64)
    freq_gate = torch.randn(seq // 2 + 1, 1, dtype=torch.float64)
    h = torch.fft.irfft(torch.sigmoid(freq_gate), n=seq, dim=0)  # [T, 1]

    x2 = x.clone()
    x2[:, -1] += 1.0  # perturb the last token only
    seed_first, seed_first2 = (_seed_spectral_gate(v, freq_gate)[:, 0] for v in (x, x2))
    leak = rel_rms(seed_first2, seed_first)
    assert leak > 1e-2, leak
    ours = rel_rms(causal_fft_conv(x2, h)[0][:, 0], causal_fft_conv(x, h)[0][:, 0])
    assert ours <= 1e-14, ours

    periodic = causal_fft_conv(torch.cat([x, x], dim=1), h)[0][:, seq:]
    assert_close(_seed_spectral_gate(x, freq_gate), periodic, 1e-12, "seed = circular conv")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs(dtype):
    """Half inputs compute in float32 and return float32 outputs and state: against the float64
    reference on the same (rounded) inputs only float32 FFT rounding is left."""
    seq, taps = 65, 65
    x, kernel, state = _inputs(seq, taps, dtype, with_state=True)
    x64, k64 = x.detach().double(), kernel.detach().double()
    s64 = state.detach().double()
    y_ref, s_ref = causal_conv_ref(x64, k64, s64)
    y, s = causal_fft_conv(x, kernel, state.detach().float())
    assert y.dtype == s.dtype == torch.float32
    assert_close(y, y_ref, 1e-5, "fft")
    assert_close(s, s_ref, 0.0, "state")
    y_steps, s_steps = _chained_steps(x[:, :5], kernel, None)
    assert y_steps.dtype == s_steps.dtype == torch.float32
    assert_close(y_steps, causal_conv_ref(x64[:, :5], k64)[0], 1e-6, "steps")

    y.square().sum().backward()
    assert x.grad.dtype == kernel.grad.dtype == dtype


def test_fast_fft_size():
    def smooth(n: int) -> bool:
        for p in (2, 3, 5):
            while n % p == 0:
                n //= p
        return n == 1

    for m in range(1, 2000):
        n = _fast_fft_size(m)
        assert n >= m and smooth(n) and not any(smooth(k) for k in range(m, n)), m


# resets per row of two, as lists of steps: at t = 0, mid-sequence, consecutive, the last step
RESETS = {"t=0": ([0], [0, 1]), "mid": ([5], [11]), "consecutive": ([3, 4, 5, 12], [0, 6, 7]),
          "last step": ([18], [])}


def _reset_mask(seq: int, rows: tuple[list[int], list[int]]) -> torch.Tensor:
    reset = torch.zeros(B, seq, dtype=torch.bool)
    for b, steps in enumerate(rows):
        reset[b, [t for t in steps if t < seq]] = True
    return reset


def _chained_steps_with(reset):
    def chained(x, kernel, state, reset=reset):
        ys = []
        for t in range(x.shape[1]):
            y_t, state = causal_conv_step(x[:, t], kernel, state, reset=reset[:, t])
            ys.append(y_t)
        return torch.stack(ys, dim=1), state
    return chained


@pytest.mark.parametrize("where", list(RESETS))
@pytest.mark.parametrize("taps", [1, 4, 30])
@pytest.mark.parametrize("with_state", [False, True])
def test_three_forms_agree_with_resets(where, taps, with_state):
    """ref, fft and chained steps with segment starts: outputs, final state and gradients wrt
    x, the kernel and the initial state (zero under a reset at t = 0), in float32, at an odd
    length."""
    seq = 19
    x, kernel, state = _inputs(seq, taps, with_state=with_state)
    reset = _reset_mask(seq, RESETS[where])
    held = min(taps - 1, seq + (taps - 1 if with_state else 0))
    wy, ws = torch.randn(B, seq, H, D), torch.randn(B, held, H, D)
    ref = partial(causal_conv_ref, reset=reset)
    y_ref, s_ref, g_ref = _outputs_and_grads(ref, x, kernel, state, wy, ws)
    for fn in (partial(causal_fft_conv, reset=reset), _chained_steps_with(reset)):
        y, s, grads = _outputs_and_grads(fn, x, kernel, state, wy, ws)
        what = f"{where} K={taps}"
        assert_close(y, y_ref, 1e-5, what)
        assert_close(s, s_ref, 1e-6, what + " state")
        for name, g, g0 in zip(["x", "kernel", "state"], grads, g_ref, strict=False):
            assert_close(g, g0, 1e-5, f"{what} grad {name}")
    if with_state:
        assert not g_ref[2][reset[:, 0]].any()


def test_reference_resets_equal_segments_alone():
    """The reference with resets equals each segment run alone, the first from the initial
    state and the others from nothing; the state handed on is the last segment's, zeros before
    it; the FFT form agrees in float64 to rounding."""
    seq, taps, starts = 20, 6, [4, 5, 13]
    x, kernel, state = _inputs(seq, taps, torch.float64, with_state=True)
    reset = torch.zeros(B, seq, dtype=torch.bool)
    reset[:, starts] = True
    y, final = causal_conv_ref(x, kernel, state, reset=reset)
    bounds = [0, *starts, seq]
    for i, (t0, t1) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        y_alone, s_alone = causal_conv_ref(x[:, t0:t1], kernel, state if i == 0 else None)
        assert_close(y[:, t0:t1], y_alone, 1e-15, f"segment {i}")
    assert_close(final[:, -s_alone.shape[1]:], s_alone, 0.0, "state")
    assert not final[:, :-s_alone.shape[1]].any()
    y_fft, final_fft = causal_fft_conv(x, kernel, state, reset=reset)
    assert_close(y_fft, y, 1e-13, "fft")
    assert_close(final_fft, final, 0.0, "fft state")


@pytest.mark.parametrize("fn", [causal_conv_ref, causal_fft_conv])
def test_bad_resets(fn):
    x, kernel = torch.randn(B, 8, H, D), torch.randn(4, H, D)
    with pytest.raises(TypeError, match="reset must be a bool tensor"):
        fn(x, kernel, reset=torch.zeros(B, 8))
    with pytest.raises(ValueError, match="reset must have shape"):
        fn(x, kernel, reset=torch.zeros(B, 7, dtype=torch.bool))
    with pytest.raises(TypeError, match="reset must be a torch.Tensor"):
        fn(x, kernel, reset=[[False] * 8] * B)
    with pytest.raises(ValueError, match="reset must have shape"):
        causal_conv_step(x[:, 0], kernel, reset=torch.zeros(B, 8, dtype=torch.bool))


@pytest.mark.parametrize("fn", [causal_conv_ref, causal_fft_conv])
def test_bad_arguments(fn):
    x, kernel = torch.randn(B, 8, H, D), torch.randn(4, H, D)
    with pytest.raises(ValueError, match="kernel channel dims"):
        fn(x, torch.randn(4, H, D + 1))
    with pytest.raises(ValueError, match="kernel channel dims"):
        fn(x, torch.randn(4, 5, H, D))
    with pytest.raises(ValueError, match="kernel must have shape"):
        fn(x, torch.randn(0, H, D))
    with pytest.raises(ValueError, match="kernel must have shape"):
        fn(x, torch.tensor(1.0))
    with pytest.raises(ValueError, match="x must have a positive sequence length"):
        fn(torch.randn(B, 0, H, D), kernel)
    with pytest.raises(ValueError, match="x must have shape"):
        fn(torch.randn(8), torch.randn(4))
    with pytest.raises(TypeError, match="x must be a real floating"):
        fn(x.long(), kernel)
    with pytest.raises(TypeError, match="kernel must be a real floating"):
        fn(x, kernel.int())
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        fn(x.tolist(), kernel)
    with pytest.raises(ValueError, match="initial_state must have shape"):
        fn(x, kernel, torch.randn(B, 4, H, D))
    with pytest.raises(TypeError, match="initial_state must have dtype"):
        fn(x, kernel, torch.randn(B, 3, H, D).bfloat16())
    with pytest.raises(TypeError, match="initial_state must be a torch.Tensor"):
        fn(x, kernel, 0.0)


def test_step_bad_arguments():
    x_t, kernel = torch.randn(B, H, D), torch.randn(4, H, D)
    with pytest.raises(ValueError, match="initial_state must have shape"):
        causal_conv_step(x_t, kernel, torch.randn(B, 4, H, D))
    with pytest.raises(ValueError, match="kernel channel dims"):
        causal_conv_step(x_t, torch.randn(4, D, H))
    with pytest.raises(ValueError, match="x_t must have shape"):
        causal_conv_step(torch.tensor(1.0), torch.randn(4))
    with pytest.raises(TypeError, match="x_t must be a real floating"):
        causal_conv_step(x_t.long(), kernel)
