"""Packed documents for the memory op tests: document starts (`reset=`) placed where chunked
forms can get them wrong, and an op's packed call done the long way, every document alone."""

from __future__ import annotations

import torch


def make_reset(B: int, T: int, chunk_size: int, seed: int = 0) -> torch.Tensor:
    """[B, T] bool document starts. Row 0: at t = 0, mid-chunk, on chunk boundaries (the first
    token of a chunk and the last of one), two and three in a row, and the last token; row 1:
    none at t = 0, consecutive ones at its start, one on the last token of the first chunk, then
    one token in ten at random; other rows at random."""
    C = chunk_size
    rows = [{0, C // 2, C - 1, C, 2 * C, 2 * C + 1, 2 * C + 2, T - 1}, {1, 2, C - 1, C + C // 2}]
    gen = torch.Generator().manual_seed(seed)
    reset = torch.rand(B, T, generator=gen) < 0.1
    reset[0] = False
    for b, starts in enumerate(rows[:B]):
        reset[b, [t for t in sorted(starts) if t < T]] = True
    return reset


def documents_alone(fn, names: tuple[str, ...]):
    """`fn` (a memory op taking `reset=`) computed without it: each row split at its starts, each
    document run alone through `fn`, the first of a row from the row's initial state (from zeros
    made of it when the row starts with a reset, so that its gradient is the exact zero the packed
    call gives), the others from zero; y concatenated, the final state the last document's.
    `names`: the per-token inputs ([B, T, ...] or None), sliced per document; the other keyword
    arguments pass through."""

    def call(*, reset: torch.Tensor, initial_state: torch.Tensor | None = None, **kwargs):
        tokens = {n: kwargs.pop(n) for n in names}
        ys, states = [], []
        for b, row in enumerate(reset.tolist()):
            bounds = [0, *(t for t in range(1, len(row)) if row[t]), len(row)]
            parts = []
            for i, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
                state = None
                if i == 0 and initial_state is not None:
                    state = initial_state[b:b + 1] * (0.0 if row[0] else 1.0)
                doc = {n: None if x is None else x[b:b + 1, start:stop] for n, x in tokens.items()}
                y, S = fn(**doc, initial_state=state, **kwargs)
                parts.append(y)
            ys.append(torch.cat(parts, dim=1))
            states.append(S)
        return torch.cat(ys, dim=0), torch.cat(states, dim=0)

    return call
