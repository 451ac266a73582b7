"""Shared by the layer tests: feed a sequence in pieces through a Mixer-style layer, take
gradients of a fixed random linear loss of its outputs and final state, and compare a packed
batch (several documents per row) with its documents run alone."""

import torch

from hololm.layers.base import Padding
from tests.helpers import assert_close


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


def packed(lengths: tuple[tuple[int, ...], ...], padded: bool = False) -> Padding:
    """The `Padding` of rows that pack documents of these lengths (no padding tokens), as the
    model builds it from position_ids restarting at 0; `padded` True: as it is built where an
    attention mask could hold padding (every token real all the same), so the layers take their
    padding path."""
    positions = torch.tensor([[i for n in row for i in range(n)] for row in lengths])  # [B, T]
    starts = positions == 0
    return Padding(keep=torch.ones_like(starts), keys=torch.ones_like(starts),
                   positions=positions, starts=starts, documents=starts.long().cumsum(1) - 1,
                   padded=padded)


def run_packed(layer, x: torch.Tensor, pad: Padding, lengths: list[int]):
    """`run_pieces` for a packed batch: each piece gets its slice of `pad` (the keys and
    documents so far)."""
    ys, state, pos = [], None, 0
    for n in lengths:
        part = Padding(keep=pad.keep[:, pos:pos + n], keys=pad.keys[:, :pos + n],
                       positions=pad.positions[:, pos:pos + n], starts=pad.starts[:, pos:pos + n],
                       documents=pad.documents[:, :pos + n], padded=pad.padded)
        y, state = layer(x[:, pos:pos + n], state, position=pos, pad=part)
        ys.append(y)
        pos += n
    assert pos == x.shape[1]
    return torch.cat(ys, 1), state


def assert_packed_equals_alone(layer, x: torch.Tensor, lengths: tuple[tuple[int, ...], ...],
                               tol: float, padded: bool = False) -> None:
    """A packed batch through `layer` against each of its documents run alone from a fresh
    state: the outputs, ∂L/∂(x, params) of a fixed random linear loss of the outputs, and each
    row's final state (its last document's; a buffer of recent inputs holds zeros before it)."""
    x = x.detach().requires_grad_()
    w = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    y, state = layer(x, None, 0, pad=packed(lengths, padded))
    grads = torch.autograd.grad((y * w).sum(), [x, *layer.parameters()], allow_unused=True)

    alone, total, last_states = torch.empty_like(y), 0, []
    for row, parts in enumerate(lengths):
        start = 0
        for n in parts:
            y_doc, state_doc = layer(x[row:row + 1, start:start + n], None, 0)
            alone[row:row + 1, start:start + n] = y_doc.detach()
            total = total + (y_doc * w[row:row + 1, start:start + n]).sum()
            start += n
        last_states.append(state_doc)
    want = torch.autograd.grad(total, [x, *layer.parameters()], allow_unused=True)

    assert_close(y, alone, tol, "y")
    for i, (got, ref) in enumerate(zip(grads, want, strict=True)):
        if ref is None:
            assert got is None or not got.any(), f"gradient {i}"
        else:
            assert_close(got, ref, tol, f"gradient {i}")
    for key in state:
        for row, ref in enumerate(last_states):
            got = state[key][row:row + 1]
            n = ref[key].shape[1] if key == "buffer" else got.shape[1]
            assert not got[:, :got.shape[1] - n].any(), f"{key} before the last document"
            assert_close(got[:, got.shape[1] - n:], ref[key], tol, f"{key} row {row}")
