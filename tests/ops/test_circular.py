from __future__ import annotations

import pytest
import torch

from hololm.ops.circular import (
    circular_conv_ref,
    circular_corr_ref,
    fft_circular_conv,
    fft_circular_corr,
)
from tests.helpers import assert_close

PAIRS = [(fft_circular_conv, circular_conv_ref), (fft_circular_corr, circular_corr_ref)]
PAIR_IDS = ["conv", "corr"]


def _conv_sum(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The textbook binding on 1-D vectors: Σ_j x[j] y[(k − j) mod D]."""
    d = x.shape[0]
    return torch.stack([sum(x[j] * y[(k - j) % d] for j in range(d)) for k in range(d)])


def _corr_sum(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The textbook unbinding on 1-D vectors, trace x and key y: Σ_j x[(j + k) mod D] y[j]."""
    d = x.shape[0]
    return torch.stack([sum(x[(j + k) % d] * y[j] for j in range(d)) for k in range(d)])


@pytest.mark.parametrize("d", [1, 2, 5, 8])
def test_refs_and_fast_match_index_sums(d):
    x, y = torch.randn(d, dtype=torch.float64), torch.randn(d, dtype=torch.float64)
    for index_sum, fast, ref in [(_conv_sum, fft_circular_conv, circular_conv_ref),
                                 (_corr_sum, fft_circular_corr, circular_corr_ref)]:
        want = index_sum(x, y)
        assert_close(ref(x, y), want, 1e-14, "ref")
        assert_close(fast(x, y), want, 1e-13, "fast")


@pytest.mark.parametrize("fast,ref", PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("d", [7, 16, 33, 64])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-13), (torch.float32, 1e-6)])
def test_fast_matches_ref(fast, ref, d, dtype, tol):
    x, y = torch.randn(2, 3, d, dtype=dtype), torch.randn(2, 3, d, dtype=dtype)
    out = fast(x, y)
    assert out.dtype == dtype and out.shape == (2, 3, d)
    assert_close(out, ref(x.double(), y.double()), tol, f"{fast.__name__} D={d}")


@pytest.mark.parametrize("fast,ref", PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("d", [15, 16])
def test_half_inputs(fast, ref, dtype, d):
    """Half inputs transform in float32 and come back in their dtype: the only error left is the
    final rounding to that dtype (bf16: 8 bits of mantissa, ~2e-3 relative RMS)."""
    x, y = torch.randn(2, 3, d).to(dtype), torch.randn(2, 3, d).to(dtype)
    out = fast(x, y)
    assert out.dtype == dtype
    assert_close(out, ref(x.double(), y.double()), 5e-3, f"{fast.__name__} {dtype}")


def test_mixed_dtypes_promote():
    x, key = torch.randn(2, 8, dtype=torch.bfloat16), torch.randn(8)
    assert fft_circular_conv(x, key).dtype == torch.float32
    assert fft_circular_corr(x, key.double()).dtype == torch.float64


@pytest.mark.parametrize("fast,ref", PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("key_first", [True, False])
def test_broadcasting(fast, ref, key_first):
    """A key [D] or per-head keys [H, D] against activations [B, T, D] / [B, T, H, D]."""
    for x_shape, key_shape in [((2, 5, 9), (9,)), ((2, 5, 3, 8), (3, 8)), ((2, 1, 8), (4, 8))]:
        x, key = torch.randn(x_shape, dtype=torch.float64), torch.randn(key_shape,
                                                                         dtype=torch.float64)
        a, b = (key, x) if key_first else (x, key)
        shape = torch.broadcast_shapes(x.shape, key.shape)
        out = fast(a, b)
        assert out.shape == shape
        assert_close(out, fast(a.expand(shape), b.expand(shape)), 1e-14, "vs expanded")
        assert_close(out, ref(a, b), 1e-13, "vs ref")


@pytest.mark.parametrize("fast,ref", PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("d", [9, 16])
def test_gradients_match_ref(fast, ref, dtype, tol, d):
    """Both orders, with a broadcast key so that its gradient is summed over the leading dims."""
    for x_shape, y_shape in [((2, 3, d), (2, 3, d)), ((2, 3, d), (d,)), ((d,), (2, 3, d))]:
        x = torch.randn(x_shape, dtype=dtype, requires_grad=True)
        y = torch.randn(y_shape, dtype=dtype, requires_grad=True)
        w = torch.randn(torch.broadcast_shapes(x_shape, y_shape), dtype=dtype)
        grads = [torch.autograd.grad((fn(x, y) * w).sum(), (x, y)) for fn in (fast, ref)]
        for name, g_fast, g_ref in zip("xy", *grads, strict=True):
            assert_close(g_fast, g_ref, tol, f"grad {name} {x_shape} {y_shape}")


def test_half_gradients():
    x = torch.randn(2, 3, 16).bfloat16().requires_grad_()
    key = torch.randn(16).bfloat16().requires_grad_()
    fft_circular_corr(fft_circular_conv(x, key), key).float().square().sum().backward()
    assert x.grad.dtype == torch.bfloat16 and key.grad.dtype == torch.bfloat16
    x64, key64 = x.detach().double().requires_grad_(), key.detach().double().requires_grad_()
    circular_corr_ref(circular_conv_ref(x64, key64), key64).square().sum().backward()
    assert_close(x.grad, x64.grad, 2e-2, "grad x")
    assert_close(key.grad, key64.grad, 2e-2, "grad key")


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


def test_hrr_unbinding_recovers_the_bound_item():
    """HSN's order, `fft_circular_corr(hologram, unbind_key)`: corr(conv(key, item), key) ≈
    item for random keys with N(0, 1/D) entries, D = 1024: the cosine similarity is ~0.7 against
    ~1/√D = 0.03 for unrelated vectors, even from a trace holding several bound pairs. The
    mirrored order (key first) returns the item reversed, which is no unbinding."""
    d, n = 1024, 16
    keys, items = torch.randn(n, d) / d**0.5, torch.randn(n, d) / d**0.5
    traces = fft_circular_conv(keys, items)  # [n, D]
    single = _cos(fft_circular_corr(traces, keys), items)  # [n]
    assert single.min() > 0.5, single
    chance = _cos(items, items.roll(1, dims=0)).abs()
    assert chance.max() < 0.15, chance
    mirrored = fft_circular_corr(keys, traces)  # [n, D]
    assert _cos(mirrored, items).abs().max() < 0.15, _cos(mirrored, items)
    # corr(y, x)[k] = corr(x, y)[−k]: index −k mod D is k = 0 followed by D − 1 .. 1
    assert_close(mirrored, fft_circular_corr(traces, keys)[:, -torch.arange(d)], 1e-5, "mirror")

    pairs = 4
    trace = fft_circular_conv(keys[:pairs], items[:pairs]).sum(0)  # [D]: a bundle of 4 pairs
    retrieved = fft_circular_corr(trace, keys[:pairs])  # [pairs, D]
    sims = _cos(retrieved[:, None], items[None, :pairs])  # [pairs, pairs]
    assert sims.diagonal().min() > 0.3, sims
    assert torch.equal(sims.argmax(dim=1), torch.arange(pairs)), sims


@pytest.mark.parametrize("fn", [fft_circular_conv, fft_circular_corr, circular_conv_ref,
                                circular_corr_ref])
def test_bad_arguments(fn):
    x = torch.randn(2, 3, 8)
    with pytest.raises(ValueError, match="same last dim"):
        fn(x, torch.randn(7))
    with pytest.raises(TypeError, match="x must be a real floating"):
        fn(x.long(), torch.randn(8))
    with pytest.raises(TypeError, match="y must be a real floating"):
        fn(x, torch.randint(0, 3, (8,)))
    with pytest.raises(TypeError, match="y must be a real floating"):
        fn(x, torch.randn(8, dtype=torch.complex64))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        fn([1.0] * 8, torch.randn(8))
    with pytest.raises(TypeError, match="y must be a torch.Tensor"):
        fn(x, 2.0)
    with pytest.raises(ValueError, match="feature dim"):
        fn(torch.tensor(1.0), torch.tensor(2.0))
    with pytest.raises(ValueError, match="non-empty last dim"):
        fn(torch.randn(3, 0), torch.randn(3, 0))
    with pytest.raises(ValueError, match="do not broadcast"):
        fn(x, torch.randn(4, 8))
