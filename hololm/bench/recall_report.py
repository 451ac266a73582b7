"""Tables and plots of the recall benchmark's results (rows as written to recall.csv)."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _is_vector(rows: list[dict]) -> bool:
    return all(math.isnan(r["accuracy"]) for r in rows)


def _slice_label(row: dict, vary_len: bool, vary_kv: bool) -> str:
    parts = ([f"T={row['seq_len']}"] if vary_len or not vary_kv else []) + (
        [f"kv={row['num_kv_pairs']}"] if vary_kv else [])
    return " ".join(parts)


def _by_task(rows: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        groups[row["task"]].append(row)
    return groups


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def task_table(task: str, rows: list[dict]) -> str:
    """Markdown: one line per (model, width), one column per test slice."""
    vector = _is_vector(rows)
    vary_len = len({r["seq_len"] for r in rows}) > 1
    vary_kv = len({r["num_kv_pairs"] for r in rows}) > 1
    slices = sorted({(r["seq_len"], r["num_kv_pairs"]) for r in rows},
                    key=lambda s: (s[0], str(s[1]) if s[1] == "" else s[1]))
    labels = [_slice_label({"seq_len": t, "num_kv_pairs": k}, vary_len, vary_kv)
              for t, k in slices]
    metric = "MSE (predicting 0 scores 1.0)" if vector else "accuracy %"
    lines = [f"**{task}** — {metric}, trained at T={rows[0]['train_seq_len']}", "",
             "| model | d | " + " | ".join(labels) + " | state at largest T | params | lr "
             "| steps |",
             "|---|---|" + "---|" * len(labels) + "---|---|---|---|"]
    models = sorted({(r["model"], r["d_model"]) for r in rows}, key=lambda m: (m[1], m[0]))
    for model, d in models:
        mine = {(r["seq_len"], r["num_kv_pairs"]): r for r in rows
                if r["model"] == model and r["d_model"] == d}
        cells = []
        for s in slices:
            r = mine.get(s)
            cells.append("" if r is None else f"{r['mse']:.4f}" if vector
                         else f"{100 * r['accuracy']:.1f}")
        last = mine[max(mine)]
        lines.append(f"| {model} | {d} | " + " | ".join(cells)
                     + f" | {_fmt_bytes(last['state_bytes'])} | {last['params']:,} | "
                       f"{last['lr']:g} | {last['steps']} |")
    return "\n".join(lines)


def _metric(rows: list[dict]) -> tuple[str, str]:
    return ("mse", "MSE") if _is_vector(rows) else ("accuracy", "accuracy")


def _lines(ax, rows: list[dict], x: str) -> None:
    """One line per (model, width): the metric averaged over slices sharing an x value."""
    key, _ = _metric(rows)
    for model, d in sorted({(r["model"], r["d_model"]) for r in rows}):
        points: dict[int, list[float]] = defaultdict(list)
        for r in rows:
            if r["model"] == model and r["d_model"] == d:
                points[r[x]].append(r[key])
        xs = sorted(points)
        label = model if len({r["d_model"] for r in rows}) == 1 else f"{model} d={d}"
        ax.plot(xs, [sum(points[v]) / len(points[v]) for v in xs], marker="o", label=label)


def _save(fig, axes, path: Path) -> None:
    """Legend on the first panel, then the PNG."""
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _grid(groups: dict[str, list[dict]], x: str, xlabel: str, path: Path) -> None:
    if not groups:
        return
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 4), squeeze=False)
    for ax, (task, rows) in zip(axes[0], groups.items(), strict=True):
        _lines(ax, rows, x)
        _, ylabel = _metric(rows)
        ax.set(title=task, xlabel=xlabel, ylabel=ylabel, xscale="log", xticks=sorted(
            {r[x] for r in rows}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.get_xaxis().set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.grid(alpha=0.3)
    _save(fig, axes, path)


def _state_plot(groups: dict[str, list[dict]], path: Path) -> None:
    """Accuracy on the hardest slice (largest T, then most pairs) vs recurrent state bytes."""
    tasks = {t: rows for t, rows in groups.items() if t.startswith("mqar")}
    if not tasks:
        return
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    for ax, (task, rows) in zip(axes[0], tasks.items(), strict=True):
        hardest = max((r["seq_len"], r["num_kv_pairs"]) for r in rows)
        for model in sorted({r["model"] for r in rows}):
            points = sorted((r["state_bytes"], r["accuracy"]) for r in rows
                            if r["model"] == model and (r["seq_len"], r["num_kv_pairs"])
                            == hardest)
            ax.plot(*zip(*points, strict=True), marker="o", label=model)
        ax.set(title=f"{task} T={hardest[0]} kv={hardest[1]}", xscale="log",
               xlabel="recurrent state (bytes, batch 1)", ylabel="accuracy")
        ax.get_xaxis().set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.grid(alpha=0.3)
    _save(fig, axes, path)


def write_reports(rows: list[dict], out: Path, profile: dict, command: str,
                  wall_s: float) -> str:
    """recall.md and the three PNGs in `out`; returns the markdown."""
    groups = _by_task(rows)
    tables = [task_table(task, task_rows) for task, task_rows in groups.items()]
    text = (f"Made by `{command}` in {wall_s / 60:.1f} min.\n\n" + "\n\n".join(tables)
            + "\n\nProfile: `" + json.dumps(profile, default=str) + "`\n")
    (out / "recall.md").write_text(text)
    _grid({t: r for t, r in groups.items() if len({x["seq_len"] for x in r}) > 1}, "seq_len",
          "test sequence length", out / "recall_vs_seq_len.png")
    _grid({t: r for t, r in groups.items() if len({x["num_kv_pairs"] for x in r}) > 1},
          "num_kv_pairs", "key-value pairs", out / "recall_vs_kv_pairs.png")
    _state_plot(groups, out / "recall_vs_state.png")
    return text
