from __future__ import annotations

import pytest
import torch

from hololm.ops.cumsum import _prefers_blocked, blocked_cumsum, cumsum
from tests.helpers import assert_close


@pytest.mark.parametrize("length", [1, 2, 63, 64, 65, 257, 1000])
@pytest.mark.parametrize("dim", [0, 1, 2, -1])
@pytest.mark.parametrize("block_size", [1, 7, 64])
def test_matches_torch_cumsum_float64(length, dim, block_size):
    shape = [3, 2, 5]
    shape[dim] = length
    x = torch.randn(shape, dtype=torch.float64)
    y = blocked_cumsum(x, dim, block_size)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert_close(y, torch.cumsum(x, dim), 1e-13, f"length={length} dim={dim} L={block_size}")


@pytest.mark.parametrize("length", [1, 63, 65, 1000])
@pytest.mark.parametrize("block_size", [1, 7, 32])
def test_reverse_is_the_suffix_sum(length, block_size):
    x = torch.randn(2, length, 70, dtype=torch.float64)
    ref = torch.cumsum(x.flip(1), 1).flip(1)
    assert_close(blocked_cumsum(x, 1, block_size, reverse=True), ref, 1e-13, f"L={block_size}")
    assert_close(cumsum(x, 1, reverse=True), ref, 1e-13, "dispatcher")
    wide = torch.randn(1, 2 * length + 64, 1024)  # long and wide enough to take the blocked path
    assert _prefers_blocked(wide, 1) == (wide.shape[1] * 1024 >= 2**20)
    ref = torch.cumsum(wide.double().flip(1), 1).flip(1)
    assert_close(cumsum(wide, 1, reverse=True).double(), ref, 1e-6, "float32")


@pytest.mark.parametrize("length", [1025, 1100])
def test_recursive_carry_values_and_gradients(length):
    # block_size=1 makes the carry axis [length - 1, 1024 columns] long and wide enough to be
    # summed blocked again (without padding for 1025, with padding for 1100)
    x = torch.randn(1, length, 1024, dtype=torch.float64, requires_grad=True)
    assert _prefers_blocked(x[:, 1:], 1)
    y = blocked_cumsum(x, 1, 1)
    assert_close(y, torch.cumsum(x, 1), 1e-13, "recursive")
    g = torch.randn_like(y)
    (grad,) = torch.autograd.grad(y, x, g)
    (ref,) = torch.autograd.grad(torch.cumsum(x, 1), x, g)
    assert_close(grad, ref, 1e-13, "recursive grad")


def test_float32_and_noncontiguous():
    x = torch.randn(4, 700, 6).transpose(0, 2)  # [6, 700, 4], non-contiguous
    ref = torch.cumsum(x.double(), 1)
    assert_close(blocked_cumsum(x, 1), ref, 1e-6, "float32")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_accumulate_in_float32(dtype):
    x = torch.randn(2, 1000, 3).to(dtype)
    y = blocked_cumsum(x, 1)
    assert y.dtype == dtype
    # only the final rounding to the half type: well under what a half-precision running sum loses
    assert_close(y, torch.cumsum(x.double(), 1), 4e-3, str(dtype))


def test_autocast_keeps_float32_accumulation():
    x = torch.randn(2, 1000, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = blocked_cumsum(x, 1)
    assert y.dtype == torch.float32
    assert_close(y, torch.cumsum(x.double(), 1), 1e-6, "autocast")


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_gradients_match_torch_cumsum(dim):
    x = torch.randn(70, 65, 3, dtype=torch.float64, requires_grad=True)
    g = torch.randn(70, 65, 3, dtype=torch.float64)
    (grad,) = torch.autograd.grad(blocked_cumsum(x, dim, 16), x, g)
    (ref,) = torch.autograd.grad(torch.cumsum(x, dim), x, g)
    assert_close(grad, ref, 1e-13, f"grad dim={dim}")


def test_gradcheck():
    x = torch.randn(2, 11, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: blocked_cumsum(t, 1, 4), (x,))


def test_dispatcher():
    long_wide = torch.randn(1, 4096, 256, dtype=torch.float64)
    assert _prefers_blocked(long_wide, 1)
    assert_close(cumsum(long_wide, 1), torch.cumsum(long_wide, 1), 1e-13, "dispatched")
    assert not _prefers_blocked(long_wide, 2)  # innermost axis
    assert not _prefers_blocked(long_wide[:, :1024], 1)  # short axis
    assert not _prefers_blocked(long_wide.bfloat16(), 1)  # half types need a longer axis
    assert not _prefers_blocked(torch.randn(1, 2**16, 16), 1)  # few columns
    ints = torch.randint(-5, 5, (3, 100))
    assert torch.equal(cumsum(ints, -1), torch.cumsum(ints, -1))
    z = torch.randn(3, 100, dtype=torch.complex64)
    assert torch.equal(cumsum(z, 1), torch.cumsum(z, 1))


def test_empty_axis():
    x = torch.randn(2, 0, 3)
    assert blocked_cumsum(x, 1).shape == (2, 0, 3)


def test_bad_arguments():
    x = torch.randn(2, 5)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="block_size"):
            blocked_cumsum(x, 1, bad)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        blocked_cumsum([1.0, 2.0], 0)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        cumsum([1.0, 2.0], 0)
    with pytest.raises(TypeError, match="x must be a real floating"):
        blocked_cumsum(torch.arange(5), 0)
    with pytest.raises(ValueError, match="dim"):
        blocked_cumsum(x, 2)
    with pytest.raises(ValueError, match="dim"):
        cumsum(x, -3)
    with pytest.raises(TypeError, match="dim"):
        blocked_cumsum(x, 1.0)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("length", [128, 77])
def test_running_sums_equal_the_matmul_form_and_leave_the_input_alone(reverse, length):
    """Without a recorded gradient the in-block sums are in-place adds; with one, a triangular
    matmul. Same numbers, and the input (a view of which the adds may start from) unchanged."""
    x = torch.randn(3, length, 4, 16, dtype=torch.float64)
    keep = x.clone()
    ref = torch.cumsum(x.flip(1), 1).flip(1) if reverse else torch.cumsum(x, 1)
    with torch.no_grad():
        running = blocked_cumsum(x, 1, reverse=reverse)
    assert torch.equal(x, keep)
    matmul = blocked_cumsum(x.clone().requires_grad_(), 1, reverse=reverse)
    assert_close(running, ref, 1e-12, "running sums")
    assert_close(matmul.detach(), ref, 1e-12, "matmul form")
