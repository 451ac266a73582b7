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


def _slices(rows: list[dict]) -> list[tuple]:
    return sorted({(r["seq_len"], r["num_kv_pairs"]) for r in rows},
                  key=lambda s: (s[0], str(s[1]) if s[1] == "" else s[1]))


def task_table(task: str, rows: list[dict]) -> str:
    """Markdown: one line per (model, width), one column per test slice (test-only slices, longer
    than any training slice, marked †), then the state after the longest test sequence and its
    share of softmax attention's KV cache at that length (same width)."""
    vector = _is_vector(rows)
    vary_len = len({r["seq_len"] for r in rows}) > 1
    vary_kv = len({r["num_kv_pairs"] for r in rows}) > 1
    slices = _slices(rows)
    test_only = {(r["seq_len"], r["num_kv_pairs"]) for r in rows if not r["train_slice"]}
    labels = [_slice_label({"seq_len": t, "num_kv_pairs": k}, vary_len, vary_kv)
              + (" †" if (t, k) in test_only else "") for t, k in slices]
    kv_cache = {r["d_model"]: r["state_bytes_longest"] for r in rows if r["model"] == "attention"}
    metric = "MSE (predicting 0 scores 1.0)" if vector else "accuracy % (argmax over the whole " \
        "vocabulary)"
    lines = [f"**{task}** — {metric}; † = test-only slice", "",
             "| model | d | " + " | ".join(labels) + " | state at longest T | vs attention KV "
             "| params | lr | steps |",
             "|---|---|" + "---|" * len(labels) + "---|---|---|---|---|"]
    models = sorted({(r["model"], r["d_model"]) for r in rows}, key=lambda m: (m[1], m[0]))
    for model, d in models:
        mine = {(r["seq_len"], r["num_kv_pairs"]): r for r in rows
                if r["model"] == model and r["d_model"] == d}
        cells = []
        for s in slices:
            r = mine.get(s)
            cells.append("" if r is None else f"{r['mse']:.4f}" if vector
                         else f"{100 * r['accuracy']:.1f}")
        last = next(iter(mine.values()))
        state = last["state_bytes_longest"]
        ratio = f"{state / kv_cache[d]:.2f}x" if d in kv_cache else ""
        lines.append(f"| {model} | {d} | " + " | ".join(cells)
                     + f" | {_fmt_bytes(state)} | {ratio} | {last['params']:,} | "
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


def _state_plot(rows: list[dict], path: Path) -> None:
    """Zoology's figure: MQAR accuracy vs recurrent state, one panel per test slice, one line per
    model through its widths. The x value is the state after the longest test sequence — for
    softmax attention its KV cache there, for a memory its fixed state."""
    if not rows:
        return
    slices = _slices(rows)
    test_only = {(r["seq_len"], r["num_kv_pairs"]) for r in rows if not r["train_slice"]}
    fig, axes = plt.subplots(1, len(slices), figsize=(4.2 * len(slices), 4), squeeze=False,
                             sharey=True)
    for ax, (seq_len, kv) in zip(axes[0], slices, strict=True):
        for model in sorted({r["model"] for r in rows}):
            points = sorted((r["state_bytes_longest"], r["accuracy"]) for r in rows
                            if r["model"] == model and (r["seq_len"], r["num_kv_pairs"])
                            == (seq_len, kv))
            if points:
                style = "--" if model in ("attention", "mamba2") else "-"
                ax.plot(*zip(*points, strict=True), style, marker="o", label=model)
        kind = "test only" if (seq_len, kv) in test_only else "trained"
        ax.set(title=f"T={seq_len} kv={kv} ({kind})", xscale="log",
               xlabel="state after the longest test T (bytes)", ylim=(-0.02, 1.02))
        ax.get_xaxis().set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy")
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="center right", fontsize=8)
    fig.tight_layout(rect=(0, 0, 0.88, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_reports(rows: list[dict], out: Path, profile: dict, command: str,
                  wall_s: float, dropped: dict[str, str]) -> str:
    """recall.md and the PNGs in `out` (the headline: recall_vs_state.png); returns the
    markdown, which opens with the command that made it."""
    groups = _by_task(rows)
    tables = [task_table(task, task_rows) for task, task_rows in groups.items()]
    notes = [f"- **{task}**: {why}" for task, why in dropped.items()]
    text = (f"```bash\n{command}\n```\n\nMade in {wall_s / 60:.1f} min. "
            "![accuracy vs state](recall_vs_state.png)\n\n" + "\n\n".join(tables)
            + ("\n\nTasks dropped by the attention gate:\n\n" + "\n".join(notes)
               if notes else "")
            + "\n\nProfile: `" + json.dumps(profile, default=str) + "`\n")
    (out / "recall.md").write_text(text)
    _grid({t: r for t, r in groups.items() if len({x["seq_len"] for x in r}) > 1}, "seq_len",
          "test sequence length", out / "recall_vs_seq_len.png")
    _grid({t: r for t, r in groups.items() if len({x["num_kv_pairs"] for x in r}) > 1},
          "num_kv_pairs", "key-value pairs", out / "recall_vs_kv_pairs.png")
    _state_plot(groups.get("mqar", []), out / "recall_vs_state.png")
    return text
