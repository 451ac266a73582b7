"""Shared by the layer tests: feed a sequence in pieces through a Mixer-style layer, and take
gradients of a fixed random linear loss of its outputs and final state."""

import torch


def run_pieces(layer, x: torch.Tensor, lengths: list[int]):
    """Feed x in consecutive pieces, carrying state and position; returns (y, final state)."""
    ys, state, pos = [], None, 0
    for n in lengths:
        y, state = layer(x[:, pos:pos + n], state, position=pos)
        ys.append(y)
        pos += n
    assert pos == x.shape[1]
    return torch.cat(ys, 1), state


def loss_and_grads(layer, x: torch.Tensor, lengths: list[int]):
    """y, final state and ∂L/∂(x, params) for a fixed random linear loss of y and every state
    tensor (complex ones through their real view)."""
    x = x.detach().requires_grad_()
    y, state = run_pieces(layer, x, lengths)
    gen = torch.Generator().manual_seed(1)
    loss = (y * torch.randn(y.shape, generator=gen)).sum()
    for key in sorted(state):
        s = torch.view_as_real(state[key]) if state[key].is_complex() else state[key]
        loss = loss + (s * torch.randn(s.shape, generator=gen, dtype=s.dtype)).sum()
    return y, state, torch.autograd.grad(loss, [x, *layer.parameters()])


def assert_causal(layer, x: torch.Tensor, t: int) -> None:
    """Changing x after position t leaves y at <= t bit-identical and changes y after t."""
    x2 = x.clone()
    x2[:, t + 1:] += torch.randn_like(x2[:, t + 1:])
    y, y2 = layer(x)[0], layer(x2)[0]
    assert torch.equal(y[:, :t + 1], y2[:, :t + 1])
    assert not torch.allclose(y[:, t + 1:], y2[:, t + 1:])


@torch.no_grad()
def backbone_style_init(layer) -> None:
    """What the backbone does before calling reset_parameters: normal(0.02) matrices, zeros."""
    for p in layer.parameters():
        p.normal_(0, 0.02) if p.dim() > 1 else p.zero_()
