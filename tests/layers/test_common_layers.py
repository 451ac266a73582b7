import pytest
import torch

from hololm.layers.attention import CausalSelfAttention
from hololm.layers.mlp import swiglu_width
from hololm.layers.rotary import RotaryEmbedding
from hololm.layers.short_conv import ShortConv
from tests.helpers import assert_close


def test_rotary_scores_depend_only_on_relative_position():
    rope = RotaryEmbedding(16)
    q, k = torch.randn(1, 1, 16), torch.randn(1, 1, 16)
    scores = [(rope(q, p + 7) * rope(k, p)).sum().item() for p in (0, 1000, 131_072)]
    assert max(scores) - min(scores) < 1e-4 * abs(scores[0]) + 1e-5
    assert torch.equal(rope(q, 0), q)  # position 0 is the identity


def test_rotary_is_exact_far_away():
    rope = RotaryEmbedding(8)
    x = torch.randn(1, 3, 2, 8, dtype=torch.float64)
    far = rope(x, 2**20)
    assert_close(far.norm(dim=-1), x.norm(dim=-1), 1e-6, "rotation keeps norms")
    with pytest.raises(ValueError, match="even"):
        RotaryEmbedding(7)


def test_swiglu_width_rounds_up_to_256():
    assert swiglu_width(768, 8 / 3) == 2048
    assert swiglu_width(96, 8 / 3) == 256
    assert swiglu_width(1000, 8 / 3) == 2816


@torch.no_grad()
def test_attention_chunked_with_cache_equals_full():
    attn = CausalSelfAttention(32, 4).eval()
    x = torch.randn(2, 29, 32)
    full, _ = attn(x)
    y1, state = attn(x[:, :11])
    y2, state = attn(x[:, 11:20], state, 11)
    steps = []
    for t in range(20, 29):
        y, state = attn(x[:, t:t + 1], state, t)
        steps.append(y)
    assert_close(torch.cat([y1, y2, *steps], 1), full, 1e-5, "attention with KV cache")
    assert state["k"].shape == (2, 4, 29, 8)
    assert attn.state_bytes(2, 29) == 2 * state["k"].numel() * 4


def test_short_conv_state_continues_exactly():
    conv = ShortConv(6, 4)
    x = torch.randn(2, 13, 6)
    full, _ = conv(x)
    a, s = conv(x[:, :2])  # shorter than the kernel
    b, s = conv(x[:, 2:], s)
    assert_close(torch.cat([a, b], 1), full, 1e-6, "short conv")
    assert s.shape == (2, 3, 6) and torch.equal(s, x[:, -3:])


def test_short_conv_equals_depthwise_conv1d_with_gradients():
    conv = ShortConv(5, 4).double()
    x = torch.randn(2, 9, 5, dtype=torch.float64, requires_grad=True)
    y, _ = conv(x)
    padded = torch.nn.functional.pad(x, (0, 0, 3, 0)).transpose(1, 2)  # [B, C, k-1+T]
    ref = torch.nn.functional.conv1d(padded, conv.conv.weight, conv.conv.bias,
                                     groups=5).transpose(1, 2)
    assert_close(y, ref, 1e-12, "short conv vs conv1d")
    grads = torch.autograd.grad(y.square().sum(), [x, conv.conv.weight, conv.conv.bias])
    refs = torch.autograd.grad(ref.square().sum(), [x, conv.conv.weight, conv.conv.bias])
    for g, r in zip(grads, refs, strict=True):
        assert_close(g, r, 1e-12, "short conv gradients")
