"""Phasor-memory capacity and position-code orthogonality (a Holo-Transformer claim).

Capacity. N (key, value) items go through our own `phasor_memory` op: Z = Σ_s v_s ⊙ e^{iθ_s};
item j is read back with its key, r = Z ⊙ e^{-iθ_j} (the op's 1/sqrt(p+1) read scale is undone,
it changes no decision). Values are rows of a random bipolar codebook C ∈ {±1}^{M×D}; recall is
right when argmax_m <Re r, c_m> is the stored row. Keys:
  uniform         θ_s ~ U(-π, π)^D, content-only binding (freqs=None)
  random_fourier  θ_s = s·ω, ω = generate_random_phasors(D): the layer's position keys
  multiscale      as random_fourier with head h of `n_heads` scaled by 2^-h (multi_scale=True)
  rope            θ_s = s·ω, ω = rope_frequencies(D) (base 10000)
  content_g<g>    φ = π·tanh(g·W x), x ~ N(0, I) token embeddings of width d (default D/2, as
                  the holo preset's hd_dim = 2·d_model), W with nn.Linear's init U(±1/sqrt(d))
                  (g = 1: an untrained layer; larger g: a saturated one)

Theory (uniform keys). Re r = v_j + n, n_d = Σ_{s≠j} v_{s,d} cos(θ_{s,d} − θ_{j,d}): per
channel crosstalk variance (N−1)/2 (cos² averages 1/2). The true row scores D + N(0, D(N−1)/2);
each of the M−1 other rows scores N(0, D) (codebook overlap) + N(0, D(N−1)/2). Treating the
scores as independent Gaussians,
    P(correct) = ∫ φ(x) Φ((sqrt(D) + sqrt((N−1)/2)·x) / sqrt(1 + (N−1)/2))^{M−1} dx,
integrated numerically. Per-item fidelity does not depend on D — SNR = 2/(N−1), cosine
1/sqrt(1 + (N−1)/2) — D only buys the M-way decision, so capacity N* grows ~linearly in D.

Orthogonality. For position codes p_t = e^{itω} ∈ C^D the normalised similarity
s(δ) = |<p_t, p_{t+δ}>| / D = |mean_k e^{iδω_k}| does not depend on t. Random ω: |s| is Rayleigh
with E|s| = sqrt(π/(4D)). RoPE ω_k = b^{-k/D}: s(δ) → |∫_0^1 e^{iδ b^{-x}} dx| for large D,
independent of D. Holo-Transformer's "orthogonality" ratio is read as self-similarity (1) over
neighbour similarity, in several variants (adjacent, mean and max over δ = 1..K).

`python -m hololm.bench.capacity --quick --output_dir runs/capacity`
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
from tqdm.auto import tqdm

from hololm.bench.csv_rows import write_csv
from hololm.ops.phasor import (
    generate_random_phasors,
    phasor_memory,
    position_phases,
    rope_frequencies,
)

POSITION_KEYS = ("random_fourier", "multiscale", "rope")
FREQ_TYPES = ("rope", "random_fourier", "multiscale", "gaussian3")
NEIGHBOURS = 8  # blur window: an error "is a neighbour" when it decodes an item ±1..±8 away
LEVELS = (0.9, 0.5)
ROPE_BASE = 10000.0


def theory_accuracy(n_items: float, hd_dim: int, codebook_size: int,
                    crosstalk: float = 0.5) -> float:
    """Gaussian-approximation recall of one item among `codebook_size` bipolar rows, with
    `crosstalk` = E[cos²Δθ] per stored item and channel (1/2 for uniform random phases)."""
    x = torch.linspace(-12.0, 12.0, 4801, dtype=torch.float64)
    noise = crosstalk * (n_items - 1)
    arg = (math.sqrt(hd_dim) + math.sqrt(noise) * x) / math.sqrt(1 + noise)
    density = torch.exp(-x**2 / 2 + (codebook_size - 1) * torch.special.log_ndtr(arg))
    return float(torch.trapezoid(density, x) / math.sqrt(2 * math.pi))


def theory_capacity(hd_dim: int, codebook_size: int, level: float) -> float:
    """Largest (continuous) N with theory_accuracy >= level, by bisection in log N."""
    lo, hi = 0.0, math.log(1e4 * hd_dim)
    if theory_accuracy(1, hd_dim, codebook_size) < level:
        return 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if theory_accuracy(math.exp(mid), hd_dim, codebook_size) >= level \
            else (lo, mid)
    return math.exp(lo)


def measured_capacity(n_items: list[int], accuracy: list[float], level: float) -> float:
    """N where the measured curve first falls below `level`, interpolated in log N; NaN when it
    never does within the sweep (or already at the first point)."""
    for i, acc in enumerate(accuracy):
        if acc < level:
            if i == 0:
                return math.nan
            a0, a1 = accuracy[i - 1], acc
            w = (a0 - level) / (a0 - a1)
            return math.exp((1 - w) * math.log(n_items[i - 1]) + w * math.log(n_items[i]))
    return math.nan


def rope_similarity_limit(deltas: list[int], base: float = ROPE_BASE) -> list[float]:
    """Large-D limit of RoPE's s(δ): |∫_0^1 e^{iδ base^-x} dx| = |∫ e^{i e^y} dy| / ln base over
    y ∈ [ln(δ/base), ln δ] (u = δ base^-x, du/u = dy)."""
    out = []
    for delta in deltas:
        y = torch.linspace(math.log(delta / base), math.log(delta), 2**16 + 1,
                           dtype=torch.float64)
        z = torch.trapezoid(torch.exp(1j * torch.exp(y)), y) / math.log(base)
        out.append(float(z.abs()))
    return out


def frequencies(kind: str, hd_dim: int, *, seed: int = 0, n_heads: int = 8) -> torch.Tensor:
    """ω for a frequency type, float64 [hd_dim] (multiscale: heads flattened)."""
    if kind == "rope":
        return rope_frequencies(hd_dim, ROPE_BASE)
    if kind == "random_fourier":
        return generate_random_phasors(hd_dim, seed)
    if kind == "multiscale":  # as PhasorAttention(multi_scale=True): head h scaled by 2^-h
        scale = 2.0 ** -torch.arange(n_heads, dtype=torch.float64)
        return (generate_random_phasors(hd_dim, seed).view(n_heads, -1) * scale[:, None]).flatten()
    if kind == "gaussian3":  # ω ~ N(0, 3²): Holo-Transformer's reference code's "uniform" ω
        gen = torch.Generator().manual_seed(seed)
        return 3.0 * torch.randn(hd_dim, generator=gen, dtype=torch.float64)
    raise ValueError(f"unknown frequency type {kind!r}")


def similarity(freqs: torch.Tensor, deltas: torch.Tensor, chunk: int = 128) -> torch.Tensor:
    """z(δ) = <p_t, p_{t+δ}>* / D = mean_k e^{iδω_k}, complex128 [len(deltas)], with the angles
    taken by the library's float64 `position_phases`."""
    parts = []
    for start in range(0, len(deltas), chunk):
        angle = position_phases(deltas[start:start + chunk].to(torch.float64), freqs,
                                dtype=torch.float64)  # [chunk, D]
        parts.append(torch.polar(torch.ones_like(angle), angle).mean(-1))
    return torch.cat(parts)


def similarity_theory(kind: str, hd_dim: int, deltas: list[int], n_heads: int = 8
                      ) -> list[float]:
    """Derived s(δ): RMS over draws of ω for the random types (sqrt(|E z|² + Var/D)), the
    continuum limit for RoPE."""
    if kind == "rope":
        return rope_similarity_limit(deltas)
    out = []
    for delta in deltas:
        if kind == "multiscale":  # E e^{iδω}, ω ~ U(±π/2^h): sinc(δ/2^h) (normalised sinc)
            mean = torch.sinc(delta / 2.0 ** torch.arange(n_heads, dtype=torch.float64))
            out.append(math.sqrt(float(mean.mean()) ** 2 + float((1 - mean**2).mean()) / hd_dim))
        else:
            out.append(1 / math.sqrt(hd_dim))
    return out


def orthogonality_measures(freqs: torch.Tensor, windows: tuple[int, ...]) -> dict[str, float]:
    """The candidate "orthogonality" ratios of one set of frequencies (see the module doc)."""
    k_max = max(windows)
    s = similarity(freqs, torch.arange(1, k_max + 1)).abs()
    pair = position_phases(torch.tensor([500.0, 501.0]), freqs, dtype=torch.float64)
    p500, p501 = torch.polar(torch.ones_like(pair), pair)
    out = {"s1": float(s[0]), "ratio_adjacent": float(1 / s[0]),
           "dist_500_501": float((p500 - p501).norm() / p500.norm())}
    for k in windows:
        out[f"ratio_mean_{k}"] = float(1 / s[:k].mean())
        out[f"ratio_max_{k}"] = float(1 / s[:k].max())
    return out


def _content_phases(key_type: str, hd_dim: int, gen: torch.Generator, width: int):
    """Callable (batch, steps) -> content phases [batch, steps, D] for a key type, or None for
    position keys (content phase 0, the op adds p·ω)."""
    if key_type in POSITION_KEYS:
        return None
    if key_type == "uniform":
        return lambda b, t: (torch.rand(b, t, hd_dim, generator=gen) * 2 - 1) * math.pi
    if key_type.startswith("content_g"):
        gain = float(key_type.removeprefix("content_g"))
        weight = (torch.rand(hd_dim, width, generator=gen) * 2 - 1) / math.sqrt(width)
        return lambda b, t: math.pi * torch.tanh(
            gain * torch.randn(b, t, width, generator=gen) @ weight.T)
    raise ValueError(f"unknown key type {key_type!r}")


def recall_point(key_type: str, hd_dim: int, n_items: int, *, codebook_size: int = 1024,
                 decisions: int = 512, seed: int = 0, n_heads: int = 8,
                 content_width: int | None = None, copies: int = 1,
                 chunk_elems: int = 2**22) -> dict:
    """Store `n_items` items with `phasor_memory` and read min(n_items, decisions) of them per
    memory, over enough memories for `decisions` reads. `copies` = C > 1 stores every item in C
    memories whose key channels are permuted at random (the first unpermuted) and reads their
    mean, as PhasorAttention's `num_copies`. Returns the measured metrics."""
    gen = torch.Generator().manual_seed(seed)
    # [C·D]: copy c's channel j keys with channel index[c·D + j]
    index = torch.cat([torch.arange(hd_dim)]
                      + [torch.randperm(hd_dim, generator=gen) for _ in range(copies - 1)])
    n_query = min(n_items, decisions)
    batch = math.ceil(decisions / n_query)
    codebook = (torch.randint(0, 2, (codebook_size, hd_dim), generator=gen) * 2 - 1).float()
    value_idx = torch.randint(0, codebook_size, (batch, n_items), generator=gen)  # [B, N]
    items = torch.rand(batch, n_items, generator=gen).argsort(dim=1)[:, :n_query]  # [B, Q]
    freqs = frequencies(key_type, hd_dim, seed=seed, n_heads=n_heads) \
        if key_type in POSITION_KEYS else None
    freqs_c = None if freqs is None else freqs[index]
    content = _content_phases(key_type, hd_dim, gen, content_width or max(1, hd_dim // 2))
    query_phase = torch.zeros(batch, n_query, hd_dim)
    chunk = max(1, chunk_elems // (batch * hd_dim))
    state = None
    for start in range(0, n_items, chunk):
        stop = min(n_items, start + chunk)
        v = codebook[value_idx[:, start:stop]]  # [B, t, D]
        phi = torch.zeros_like(v) if content is None else content(batch, stop - start)
        v_c, phi_c = v.repeat(1, 1, copies), phi[..., index]  # [B, t, C·D]
        _, state = phasor_memory(v_c[:, :, None], phi_c[:, :, None],
                                 torch.zeros_like(v_c)[:, :, None], freqs_c, offset=start,
                                 initial_state=state)
        hit_b, hit_q = ((items >= start) & (items < stop)).nonzero(as_tuple=True)
        query_phase[hit_b, hit_q] = phi[hit_b, items[hit_b, hit_q] - start]
    reads = []
    for start in range(0, n_query, chunk):
        stop = min(n_query, start + chunk)
        pos = torch.arange(n_items + start, n_items + stop)  # read steps come after the store
        psi = query_phase[:, start:stop]
        if freqs is not None:  # ψ + p·ω ≡ j·ω: the query asks for the key written at j
            psi = psi + position_phases(items[:, start:stop] - pos, freqs)
        psi = psi[..., index]  # [B, q, C·D]
        zero = torch.zeros_like(psi)[:, :, None]
        r, _ = phasor_memory(zero, zero, psi[:, :, None], freqs_c, offset=n_items + start,
                             initial_state=state)
        r = r[:, :, 0].real.unflatten(-1, (copies, hd_dim)).mean(2)  # the copies' mean
        reads.append(r * (pos + 1).sqrt()[:, None])  # undo 1/sqrt(p+1)
    read = torch.cat(reads, dim=1)  # [B, Q, D]
    truth = value_idx.gather(1, items)  # [B, Q]
    pred = (read @ codebook.T).argmax(-1)  # [B, Q]
    target = codebook[truth]
    noise = read - target
    wrong = pred != truth
    stored = torch.zeros(batch, codebook_size, dtype=torch.bool)
    stored.scatter_(1, value_idx, True)
    near = torch.zeros_like(wrong)
    for offset in [o for k in range(1, NEIGHBOURS + 1) for o in (k, -k)]:
        j = items + offset
        ok = (j >= 0) & (j < n_items)
        near |= ok & (value_idx.gather(1, j.clamp(0, n_items - 1)) == pred)
    n_wrong = int(wrong.sum())
    noise_power = float(noise.pow(2).mean())
    return {
        "accuracy": float((~wrong).float().mean()),
        "cosine": float(torch.nn.functional.cosine_similarity(read, target, dim=-1).mean()),
        "snr": float(target.pow(2).mean()) / noise_power if noise_power > 0 else math.inf,
        "crosstalk": noise_power / (n_items - 1) if n_items > 1 else math.nan,
        "stored_error_share": float(stored.gather(1, pred)[wrong].float().mean())
        if n_wrong else math.nan,
        "stored_fraction": float(stored.float().mean()),
        "neighbour_error_share": float(near[wrong].float().mean()) if n_wrong else math.nan,
        "decisions": batch * n_query,
    }


def n_grid(hd_dim: int, steps_per_octave: int, max_ratio: float = 4.0,
           min_ratio: float = 1 / 64) -> list[int]:
    """Powers of two below min_ratio·D, then hd_dim·2^(k/steps) from min_ratio·D up to D, then
    doublings up to max_ratio·D (recall is near chance beyond D, so the fine grid stops there)."""
    lo = round(math.log2(min_ratio) * steps_per_octave)
    grid = {2**k for k in range(math.ceil(math.log2(max(1.0, min_ratio * hd_dim))))} | {1}
    grid |= {max(1, round(hd_dim * 2 ** (k / steps_per_octave))) for k in range(lo, 1)}
    grid |= {hd_dim * 2**k for k in range(1, round(math.log2(max_ratio)) + 1)}
    return sorted(grid)


def run_capacity(key_types: list[str], hd_dims: list[int], *, steps_per_octave: int,
                 codebook_size: int, decisions: int, seed: int, n_heads: int,
                 content_width: int | None = None) -> list[dict]:
    """Rows of capacity.csv: one per (key type, hd_dim, N), measured next to the theory."""
    points = [(k, d, n) for k in key_types for d in hd_dims for n in n_grid(d, steps_per_octave)]
    rows = []
    for key_type, hd_dim, n in tqdm(points, desc="capacity", dynamic_ncols=True):
        got = recall_point(key_type, hd_dim, n, codebook_size=codebook_size,
                           decisions=decisions, seed=seed + n, n_heads=n_heads,
                           content_width=content_width)
        rows.append({"key_type": key_type, "hd_dim": hd_dim, "n_items": n,
                     "codebook_size": codebook_size, **got,
                     "accuracy_theory": theory_accuracy(n, hd_dim, codebook_size),
                     "cosine_theory": 1 / math.sqrt(1 + (n - 1) / 2),
                     "snr_theory": 2 / (n - 1) if n > 1 else math.inf})
    return rows


def run_copies(hd_dims: list[int], copies: list[int], *, steps_per_octave: int,
               codebook_size: int, decisions: int, seed: int) -> list[dict]:
    """Rows of copies.csv: uniform keys, one row per (copies, hd_dim, N), next to the theory:
    the copies' mean divides the crosstalk per channel by C (independent permutations)."""
    points = [(c, d, n) for c in copies for d in hd_dims for n in n_grid(d, steps_per_octave,
                                                                         max_ratio=4.0 * c)]
    rows = []
    for c, hd_dim, n in tqdm(points, desc="copies", dynamic_ncols=True):
        got = recall_point("uniform", hd_dim, n, codebook_size=codebook_size,
                           decisions=decisions, seed=seed + n, copies=c)
        rows.append({"copies": c, "hd_dim": hd_dim, "state": c * hd_dim, "n_items": n,
                     "codebook_size": codebook_size, "accuracy": got["accuracy"],
                     "accuracy_theory": theory_accuracy(n, hd_dim, codebook_size, 0.5 / c)})
    return rows


def copies_table(rows: list[dict]) -> str:
    """Markdown: N* at 90 % / 50 % recall vs copies, measured and theory, per hd_dim."""
    lines = ["| hd_dim | copies | state (complex channels) | N* @90% measured | theory "
             "| N* @50% measured | theory |", "|---|---|---|---|---|---|---|"]
    for hd_dim in dict.fromkeys(r["hd_dim"] for r in rows):
        for c in dict.fromkeys(r["copies"] for r in rows):
            mine = [r for r in rows if r["hd_dim"] == hd_dim and r["copies"] == c]
            ns, acc = [r["n_items"] for r in mine], [r["accuracy"] for r in mine]
            cells = []
            for level in LEVELS:
                theory = [r["accuracy_theory"] for r in mine]
                cells += [_fmt(measured_capacity(ns, acc, level), 1),
                          _fmt(measured_capacity(ns, theory, level), 1)]
            lines.append(f"| {hd_dim:,} | {c} | {c * hd_dim:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_orthogonality(hd_dims: list[int], max_delta: int, n_heads: int, seed: int
                      ) -> list[dict]:
    """Rows of orthogonality.csv: s(δ) for every frequency type, hd_dim and δ = 1..max_delta."""
    rows = []
    deltas = list(range(1, max_delta + 1))
    for kind in FREQ_TYPES:
        for hd_dim in hd_dims:
            z = similarity(frequencies(kind, hd_dim, seed=seed, n_heads=n_heads),
                           torch.tensor(deltas))
            theory = similarity_theory(kind, hd_dim, deltas, n_heads)
            rows += [{"freq_type": kind, "hd_dim": hd_dim, "delta": d,
                      "similarity": abs(complex(v)), "re_similarity": float(v.real),
                      "similarity_theory": t}
                     for d, v, t in zip(deltas, z, theory, strict=True)]
    return rows


def _fmt(x: float, digits: int = 2) -> str:
    if isinstance(x, float) and math.isnan(x):
        return "—"
    if isinstance(x, float) and math.isinf(x):
        return "∞"
    return f"{x:,.{digits}f}" if isinstance(x, float) else f"{x:,}"


def capacity_table(rows: list[dict]) -> str:
    """Markdown: N* at 90 % / 50 % recall, measured vs theory, per key type and hd_dim."""
    lines = ["| keys | hd_dim | codebook | N* @90% measured | theory | N* @50% measured | theory "
             "| N*@50% / hd_dim |", "|---|---|---|---|---|---|---|---|"]
    for key_type in dict.fromkeys(r["key_type"] for r in rows):
        for hd_dim in dict.fromkeys(r["hd_dim"] for r in rows if r["key_type"] == key_type):
            mine = [r for r in rows if r["key_type"] == key_type and r["hd_dim"] == hd_dim]
            ns, acc = [r["n_items"] for r in mine], [r["accuracy"] for r in mine]
            m = mine[0]["codebook_size"]
            cells = []
            for level in LEVELS:
                cells += [_fmt(measured_capacity(ns, acc, level), 1),
                          _fmt(theory_capacity(hd_dim, m, level), 1)]
            ratio = measured_capacity(ns, acc, 0.5) / hd_dim
            lines.append(f"| {key_type} | {hd_dim:,} | {m:,} | " + " | ".join(cells)
                         + f" | {_fmt(ratio, 3)} |")
    return "\n".join(lines)


def accuracy_table(rows: list[dict], fractions: tuple[float, ...] = (1 / 16, 1 / 8, 1 / 4,
                                                                     1 / 2, 1)) -> str:
    """Markdown: measured recall (theory) at N = fraction·hd_dim."""
    head = " | ".join(f"N = D/{round(1 / f)}" if f < 1 else "N = D" for f in fractions)
    lines = [f"| keys | hd_dim | {head} |", "|---|---|" + "---|" * len(fractions)]
    for key_type in dict.fromkeys(r["key_type"] for r in rows):
        for hd_dim in dict.fromkeys(r["hd_dim"] for r in rows if r["key_type"] == key_type):
            by_n = {r["n_items"]: r for r in rows
                    if r["key_type"] == key_type and r["hd_dim"] == hd_dim}
            cells = []
            for f in fractions:
                r = by_n.get(round(f * hd_dim))
                cells.append("—" if r is None else
                             f"{100 * r['accuracy']:.1f} ({100 * r['accuracy_theory']:.1f})")
            lines.append(f"| {key_type} | {hd_dim:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def fidelity_table(rows: list[dict], fraction: float = 1 / 8) -> str:
    """Markdown: per-item fidelity and where the errors go, at N = fraction·hd_dim."""
    lines = ["| keys | hd_dim | N | recall % | cosine (theory) | SNR (theory) | crosstalk/item "
             "(uniform: 0.5) | errors on a stored value % (chance) | errors on a ±1..8 "
             "neighbour % |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["n_items"] != round(fraction * r["hd_dim"]):
            continue
        lines.append(
            f"| {r['key_type']} | {r['hd_dim']:,} | {r['n_items']:,} | "
            f"{100 * r['accuracy']:.1f} | {r['cosine']:.3f} ({r['cosine_theory']:.3f}) | "
            f"{r['snr']:.4f} ({r['snr_theory']:.4f}) | {_fmt(r['crosstalk'], 3)} | "
            f"{_fmt(100 * r['stored_error_share'], 1)} ({100 * r['stored_fraction']:.1f}) | "
            f"{_fmt(100 * r['neighbour_error_share'], 1)} |")
    return "\n".join(lines)


def orthogonality_table(hd_dims: list[int], windows: tuple[int, ...], n_heads: int,
                        seed: int) -> str:
    """Markdown: every candidate orthogonality ratio per frequency type and hd_dim."""
    k_small, k_big = min(windows), max(windows)
    lines = [f"| frequencies | hd_dim | s(1) | 1/s(1) | 1/mean s, δ≤{k_small} "
             f"(theory) | 1/mean s, δ≤{k_big} | 1/max s, δ≤{k_small} | 1/max s, δ≤{k_big} | "
             "‖p500−p501‖/‖p500‖ |", "|---|---|---|---|---|---|---|---|---|"]
    for kind in FREQ_TYPES:
        for hd_dim in hd_dims:
            m = orthogonality_measures(frequencies(kind, hd_dim, seed=seed, n_heads=n_heads),
                                       windows)
            if kind == "rope":
                theory = 1 / (sum(rope_similarity_limit(list(range(1, k_small + 1)))) / k_small)
            elif kind in ("random_fourier", "gaussian3"):
                theory = 2 * math.sqrt(hd_dim / math.pi)  # 1 / E|s|, |s| Rayleigh
            else:
                theory = math.nan
            lines.append(
                f"| {kind} | {hd_dim:,} | {m['s1']:.3f} | {m['ratio_adjacent']:.2f} | "
                f"{m[f'ratio_mean_{k_small}']:.2f} ({_fmt(theory)}) | "
                f"{m[f'ratio_mean_{k_big}']:.2f} | {m[f'ratio_max_{k_small}']:.2f} | "
                f"{m[f'ratio_max_{k_big}']:.2f} | {m['dist_500_501']:.3f} |")
    return "\n".join(lines)


def context_table(hd_dims: tuple[int, ...] = (512, 2048, 8192),
                  vocabs: tuple[int, ...] = (1024, 32000, 50257)) -> str:
    """Markdown: theory N*@50% / @90% — a layer with no forgetting stores every token, so N = t:
    the context length up to which one token can still be told apart among `vocab` others."""
    lines = ["| hd_dim | " + " | ".join(f"M = {v:,}: N*@90% / @50%" for v in vocabs) + " |",
             "|---|" + "---|" * len(vocabs)]
    for d in hd_dims:
        cells = [f"{theory_capacity(d, v, 0.9):,.0f} / {theory_capacity(d, v, 0.5):,.0f}"
                 for v in vocabs]
        lines.append(f"| {d:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_capacity(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only
    import matplotlib.pyplot as plt

    key_types = list(dict.fromkeys(r["key_type"] for r in rows))
    cols = min(3, len(key_types))
    n_rows = math.ceil(len(key_types) / cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(5 * cols, 3.8 * n_rows), squeeze=False,
                             sharey=True)
    for ax, key_type in zip(axes.flat, key_types, strict=False):
        for i, hd_dim in enumerate(dict.fromkeys(r["hd_dim"] for r in rows)):
            mine = [r for r in rows if r["key_type"] == key_type and r["hd_dim"] == hd_dim]
            if not mine:
                continue
            ns = [r["n_items"] for r in mine]
            ax.plot(ns, [r["accuracy"] for r in mine], "o-", ms=3, color=f"C{i}",
                    label=f"hd_dim {hd_dim}")
            ax.plot(ns, [r["accuracy_theory"] for r in mine], "--", color=f"C{i}", lw=1)
        ax.set(xscale="log", title=f"keys: {key_type}", xlabel="stored items N",
               ylabel="recall (nearest codebook row)")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8, title="dashed: theory (uniform phases)", title_fontsize=7)
    for ax in list(axes.flat)[len(key_types):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_orthogonality(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hd_dims = list(dict.fromkeys(r["hd_dim"] for r in rows))
    fig, axes = plt.subplots(1, len(hd_dims), figsize=(4.5 * len(hd_dims), 3.8), squeeze=False,
                             sharey=True)
    for ax, hd_dim in zip(axes[0], hd_dims, strict=True):
        for i, kind in enumerate(FREQ_TYPES):
            mine = [r for r in rows if r["freq_type"] == kind and r["hd_dim"] == hd_dim]
            deltas = [r["delta"] for r in mine]
            ax.plot(deltas, [r["similarity"] for r in mine], color=f"C{i}", lw=0.8, label=kind)
            ax.plot(deltas, [r["similarity_theory"] for r in mine], "--", color=f"C{i}", lw=1)
        ax.set(xscale="log", yscale="log", title=f"hd_dim {hd_dim}", xlabel="offset δ",
               ylabel="s(δ) = |<p_t, p_t+δ>| / D")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, title="dashed: derived", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


PROFILES = {  # quick: under ~2 minutes on 2 CPU cores
    "quick": {"hd_dims": "64,256,1024", "ortho_dims": "64,1024,8192", "steps_per_octave": 1,
              "decisions": 512, "max_delta": 512},
    "full": {"hd_dims": "64,256,1024,4096,8192", "ortho_dims": "64,256,1024,8192",
             "steps_per_octave": 2, "decisions": 2048, "max_delta": 4096},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hololm.bench.capacity",
        description="Recall of the phasor memory vs stored items and hd_dim (measured with "
                    "hololm.ops.phasor, next to the Gaussian theory for element-wise binding), "
                    "and orthogonality of random Fourier vs RoPE position codes.")
    parser.add_argument("--quick", action="store_true",
                        help="small sweep (hd_dim 64/256/1024, factor-2 N grid, 512 reads per "
                             "point): under ~2 minutes on 2 CPU cores")
    parser.add_argument("--output_dir", type=Path, default=Path("runs/capacity"),
                        help="where capacity.csv/.png/.md and orthogonality.csv/.png go")
    parser.add_argument("--hd_dims", default=None,
                        help="comma-separated hd_dim values for the capacity sweep "
                             "(default: the profile's)")
    parser.add_argument("--ortho_dims", default=None,
                        help="comma-separated hd_dim values for the orthogonality study")
    parser.add_argument("--key_types", default="uniform,random_fourier,multiscale,rope,"
                        "content_g1,content_g8",
                        help="comma-separated key types: uniform, random_fourier, multiscale, "
                             "rope, content_g<gain> (φ = π·tanh(gain·W x))")
    parser.add_argument("--codebook_size", type=int, default=1024,
                        help="number M of candidate values the read is decoded against")
    parser.add_argument("--decisions", type=int, default=None,
                        help="reads per (keys, hd_dim, N) point (default: 512 quick, 2048 full)")
    parser.add_argument("--steps_per_octave", type=int, default=None,
                        help="N grid points per doubling up to N = hd_dim (default: 1 quick, 2 "
                             "full)")
    parser.add_argument("--max_delta", type=int, default=None,
                        help="largest offset δ in orthogonality.csv")
    parser.add_argument("--n_heads", type=int, default=8,
                        help="heads of the multiscale frequencies (head h scaled by 2^-h)")
    parser.add_argument("--content_width", type=int, default=None,
                        help="token-embedding width of the content_g* keys (default: hd_dim/2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of frequencies and draws")
    parser.add_argument("--copies", default=None,
                        help="comma-separated numbers of permuted copies for the copies study "
                             "(uniform keys; default: 1,2,4,8)")
    args = parser.parse_args(argv)
    profile = PROFILES["quick" if args.quick else "full"]
    hd_dims = [int(x) for x in (args.hd_dims or profile["hd_dims"]).split(",")]
    ortho_dims = [int(x) for x in (args.ortho_dims or profile["ortho_dims"]).split(",")]
    key_types = [k.strip() for k in args.key_types.split(",") if k.strip()]
    windows = (NEIGHBOURS, 64)
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)

    ortho = run_orthogonality(ortho_dims, max(max(windows), args.max_delta or profile["max_delta"]),
                              args.n_heads, args.seed)
    rows = run_capacity(key_types, hd_dims,
                        steps_per_octave=args.steps_per_octave or profile["steps_per_octave"],
                        codebook_size=args.codebook_size,
                        decisions=args.decisions or profile["decisions"], seed=args.seed,
                        n_heads=args.n_heads, content_width=args.content_width)
    copy_rows = run_copies(hd_dims[:2], [int(c) for c in (args.copies or "1,2,4,8").split(",")],
                           steps_per_octave=args.steps_per_octave or profile["steps_per_octave"],
                           codebook_size=args.codebook_size,
                           decisions=args.decisions or profile["decisions"], seed=args.seed)
    write_csv(copy_rows, out / "copies.csv")
    write_csv(rows, out / "capacity.csv")
    write_csv(ortho, out / "orthogonality.csv")
    plot_capacity(rows, out / "capacity.png")
    plot_orthogonality(ortho, out / "orthogonality.png")
    report = "\n\n".join([
        "### Orthogonality of position codes p_t = e^{itω}",
        orthogonality_table(ortho_dims, windows, args.n_heads, args.seed),
        "### Capacity: N at which recall falls to 90 % / 50 % (theory: uniform phases)",
        capacity_table(rows),
        "### Recall % measured (theory) at N = fraction of hd_dim",
        accuracy_table(rows),
        "### Per-item fidelity and where the errors go, N = hd_dim/8",
        fidelity_table(rows),
        "### Theory: context length t = N up to which one token is recalled among M",
        context_table(),
        "### Copies (uniform keys): N at 90 % / 50 % recall vs permuted copies read as their mean"
        " (theory: crosstalk / C)",
        copies_table(copy_rows),
    ])
    (out / "capacity.md").write_text(report + "\n")
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
