"""The report of `hololm bench speed`: markdown tables, the speed goals checked against the
measured rows (met / missed, with the number), and one PNG plot per section."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)

from hololm.models.registry import MEMORIES  # noqa: E402

TARGET_T = 8192  # the goals' reference length for the mixer and model targets
LONG_CONTEXT = 16384  # decode targets compare contexts from here on with the first one


def _fmt(value: object, digits: int = 1) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown_table(rows: list[dict], columns: list[tuple[str, str, int]]) -> str:
    """columns: (key, header, digits)."""
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |",
             "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(k, math.nan), dg) for k, _, dg in columns)
                     + " |")
    return "\n".join(lines)


TIME_COLUMNS = [("fwd_ms", "fwd ms", 1), ("fwdbwd_ms", "fwd+bwd ms", 1),
                ("fwd_peak_mb", "fwd peak MB", 0), ("fwdbwd_peak_mb", "fwd+bwd peak MB", 0)]

TABLES = {
    "mixers": [("mixer", "mixer", 0), ("params", "params", 0), ("T", "T", 0), *TIME_COLUMNS,
               ("speedup_fwd_vs_attention", "fwd speed-up vs attention", 2),
               ("speedup_fwdbwd_vs_attention", "fwd+bwd speed-up vs attention", 2),
               ("status", "status", 0)],
    "models": [("model", "model", 0), ("params", "params", 0), ("T", "T", 0), *TIME_COLUMNS,
               ("speedup_fwd_vs_llama", "fwd speed-up vs llama", 2),
               ("speedup_fwdbwd_vs_llama", "fwd+bwd speed-up vs llama", 2),
               ("status", "status", 0)],
    "train": [("model", "model", 0), ("params", "params", 0),
              ("non_embedding_params", "non-embedding", 0), ("shape", "shape", 0),
              ("T", "T", 0), ("step_ms", "step ms", 1), ("tokens_per_s", "tokens/s", 0),
              ("throughput_vs_llama", "vs llama", 2), ("throughput_vs_mamba2", "vs mamba2", 2),
              ("packed_vs_plain", "packed rows vs plain", 2)],
    "decode": [("model", "model", 0), ("context", "context", 0),
               ("ms_per_token", "ms / token", 2), ("latency_vs_first", "vs first context", 2),
               ("cache_mb", "cache MB", 2), ("resident_mb", "resident growth MB", 1)],
    "ops": [("op", "op", 0), ("T", "T", 0), ("fwd_ms", "fwd ms", 2),
            ("fwdbwd_ms", "fwd+bwd ms", 2), ("achieved", "achieved", 1), ("unit", "unit", 0),
            ("ceiling", "ceiling", 1), ("pct_of_ceiling", "% of ceiling", 0),
            ("pct_of_fft", "% of FFT", 0)],
}

TITLES = {
    "mixers": "Token mixers vs SDPA attention (same width and heads)",
    "models": "Whole models vs HF Llama (same width, depth, heads, vocabulary)",
    # baselines: depth and MLP width / expand matched to the hololm models' median
    # non-embedding parameters (speed.match_baseline)
    "train": "Training throughput (forward, loss, backward, AdamW step), parameter-matched",
    "decode": "Decoding: per-token latency and memory vs context",
    "ops": "Memory ops vs the machine's ceilings",
}


def _at(rows: list[dict], key: str, name: str, T: int) -> dict | None:
    return next((r for r in rows if r[key] == name and r["T"] == T), None)


def _target_length(rows: list[dict]) -> int | None:
    """TARGET_T when measured, else the longest measured T below it (None when none)."""
    lengths = sorted({r["T"] for r in rows if r["T"] <= TARGET_T})
    return lengths[-1] if lengths else None


def _crossover(rows: list[dict], name: str) -> float:
    """Smallest measured T from which `name` is faster (fwd+bwd) than attention at every
    measured T; NaN when it never is."""
    mine = sorted((r for r in rows if r["mixer"] == name), key=lambda r: r["T"])
    cross = math.nan
    for r in reversed(mine):
        if r["speedup_fwdbwd_vs_attention"] > 1:
            cross = r["T"]
        else:
            break
    return cross


def _check(target: str, measured: float, goal: str, met: bool) -> dict:
    return {"target": target, "measured": measured, "goal": goal,
            "met": "–" if math.isnan(measured) else ("yes" if met else "no")}


def targets(results: dict[str, list[dict]]) -> list[dict]:
    """The speed goals, each checked against this run's rows."""
    checks = []
    mixers = results.get("mixers", [])
    T = _target_length(mixers)
    for name in MEMORIES:
        row = _at(mixers, "mixer", name, T) if T else None
        if row is None or "speedup_fwdbwd_vs_attention" not in row:
            continue
        s = row["speedup_fwdbwd_vs_attention"]
        checks.append(_check(f"{name} mixer fwd+bwd speed-up vs attention at T={T}", s, ">= 5",
                             s >= 5))
        c = _crossover(mixers, name)
        checks.append(_check(f"{name} mixer crossover T (faster from here on)", c, "<= 2048",
                             c <= 2048))
    models = results.get("models", [])
    T = _target_length(models)
    for name in MEMORIES:
        row = _at(models, "model", name, T) if T else None
        if row is None or "speedup_fwdbwd_vs_llama" not in row:
            continue
        s = row["speedup_fwdbwd_vs_llama"]
        checks.append(_check(f"{name} model fwd+bwd speed-up vs llama at T={T}", s, ">= 2",
                             s >= 2))
    decode = results.get("decode", [])
    for name in MEMORIES:
        mine = [r for r in decode if r["model"] == name]
        # a state bounded by a window (HSN's gate) is compared from the window on
        mine = [r for r in mine if r["context"] >= int(r.get("window") or 0)] or mine[-1:]
        if len(mine) < 2:
            continue
        base = mine[0]
        far = [r["ms_per_token"] / base["ms_per_token"] for r in mine
               if r["context"] >= LONG_CONTEXT] or [mine[-1]["ms_per_token"]
                                                    / base["ms_per_token"]]
        worst = max(far)
        checks.append(_check(f"{name} decode latency, worst long context / {base['context']}",
                             worst, "<= 1.2", worst <= 1.2))
        sizes = [r["cache_mb"] for r in mine]
        growth = max(sizes) / min(sizes) if min(sizes) > 0 else math.nan
        checks.append(_check(f"{name} decode cache size, largest / smallest context", growth,
                             "= 1 (flat)", growth == 1))
    for r in results.get("train", []):
        if r["model"] not in MEMORIES:
            continue
        for base, goal in (("llama", 1.5), ("mamba2", 2.0)):
            ratio = r.get(f"throughput_vs_{base}", math.nan)
            checks.append(_check(f"{r['model']} training tokens/s vs {base} at T={r['T']}", ratio,
                                 f">= {goal}", ratio >= goal))
        packed = r.get("packed_vs_plain", math.nan)
        checks.append(_check(f"{r['model']} training tokens/s on packed rows (4 documents) vs "
                             f"plain rows at T={r['T']}", packed, ">= 0.9", packed >= 0.9))
    for r in results.get("ops", []):
        if r["op"].endswith("(eager)"):  # the reference row of a fused op, not what runs
            continue
        pct = r["pct_of_ceiling"]
        checks.append(_check(f"{r['op']} within 3x of its ceiling (% of ceiling)", pct,
                             ">= 33", pct >= 100 / 3))
    return checks


def _line_plot(ax, rows: list[dict], key: str, x: str, y: str, ylabel: str) -> None:
    for name in dict.fromkeys(r[key] for r in rows):
        pts = [(r[x], r[y]) for r in rows if r[key] == name and not math.isnan(r[y])]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)


def plot(section: str, rows: list[dict], path: Path, subtitle: str) -> None:
    if section in ("mixers", "models"):
        key = "mixer" if section == "mixers" else "model"
        fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
        _line_plot(axes[0], rows, key, "T", "fwd_ms", "forward ms")
        _line_plot(axes[1], rows, key, "T", "fwdbwd_ms", "forward+backward ms")
        _line_plot(axes[2], rows, key, "T", "fwdbwd_peak_mb", "forward+backward peak MB")
        axes[0].legend()
    elif section == "decode":
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
        _line_plot(axes[0], rows, "model", "context", "ms_per_token", "ms per token")
        _line_plot(axes[1], rows, "model", "context", "cache_mb", "cache MB")
        axes[0].legend()
    else:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        key, value, label = (("model", "tokens_per_s", "training tokens/s") if section == "train"
                             else ("op", "pct_of_ceiling", "% of the bounding ceiling"))
        ax.bar([r[key] for r in rows], [r[value] for r in rows])
        ax.set_ylabel(label)
        ax.tick_params(axis="x", rotation=30)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(f"{TITLES[section]}\n{subtitle}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(out: Path, header: dict[str, str], results: dict[str, list[dict]]) -> str:
    """Write speed.md and <section>.png into `out`; return the markdown."""
    subtitle = f"{header['device']}, {header['dtype']}, {header['shape']}"
    parts = ["# hololm bench speed", "",
             *(f"- {k}: `{v}`" if k == "command" else f"- {k}: {v}" for k, v in header.items())]
    for section, rows in results.items():
        if not rows:
            continue
        parts += ["", f"## {TITLES[section]}", "", markdown_table(rows, TABLES[section]), "",
                  f"![{section}]({section}.png)"]
        plot(section, rows, out / f"{section}.png", subtitle)
    checks = targets(results)
    if checks:
        parts += ["", "## Targets", "",
                  markdown_table(checks, [("target", "target", 0), ("measured", "measured", 2),
                                          ("goal", "goal", 0), ("met", "met", 0)])]
    text = "\n".join(parts) + "\n"
    (out / "speed.md").write_text(text)
    return text
