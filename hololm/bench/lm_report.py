"""The outputs of `hololm bench lm`: lm.csv (the chosen learning rate of each candidate with its
test losses), lm_sweep.csv (every run), lm_curves.csv (the training loss of every step),
lm.md (the command first, then a README-ready headline table per corpus and the sweep), and
per corpus loss_vs_tokens_<corpus>.png and loss_vs_time_<corpus>.png."""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hololm.bench.csv_rows import write_csv

SWEEP = "| model | lr | steps | validation loss | train tokens/s | stream |"


def _loss_cell(row: dict, with_se: bool) -> str:
    if row["status"] != "ok":
        return "refused"  # the reason goes below the table
    if with_se and not math.isnan(row["loss_se"]):
        return f"{row['loss']:.3f} ± {row['loss_se']:.3f}"
    return f"{row['loss']:.3f}"


def _number(value: float | str | None, digits: int = 0) -> str:
    if isinstance(value, str):  # a reason in place of a measurement: below the table
        return "refused"
    if value is None or math.isnan(value):
        return "–"
    return f"{value:,.{digits}f}"


def headline_table(results: list[dict], multiples: tuple[int, ...], decode_context: int) -> str:
    """One line per candidate (the results of one corpus): counts, the test loss at each
    multiple of the training length (the first with its standard error), the loss over whole
    held-out documents where any candidate was scored on them (`--carry_state`), bits per byte
    at the first multiple, training and decoding speed, peak training memory and the learning
    rate chosen."""
    first, longer = multiples[0], multiples[1:]
    documents = any("documents" in r for r in results)
    head = ["model", "non-embedding params", "params", f"loss @{first}x ± se",
            *(f"@{m}x" for m in longer), *(["whole documents ± se"] if documents else []),
            f"bits/byte @{first}x", "train tokens/s", f"decode tokens/s @{decode_context:,}",
            "peak MB", "lr"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        at = {row["multiple"]: row for row in r.get("test", [])}
        if at:
            losses = [_loss_cell(at[first], True), *(_loss_cell(at[m], False) for m in longer)]
            bpb = at[first].get("bits_per_byte")
        else:  # every learning rate diverged: nothing was scored
            losses, bpb = [r["status"], *("–" for _ in longer)], None
        if documents:
            losses.append(_loss_cell(r["documents"], True) if "documents" in r else "–")
        cells = [r["model"], f"{r['non_embedding'] / 1e6:.3f}M", f"{r['params'] / 1e6:.3f}M",
                 *losses, _number(bpb, 3), _number(r.get("tokens_per_s")),
                 _number(r.get("decode_tokens_per_s")), _number(r.get("peak_mb"), 1),
                 _lr(r.get("lr"))]
        lines.append("| " + " | ".join(cells) + " |")
    refusals = [f"{r['model']} @{t['multiple']}x: {t['status'].removeprefix('refused: ')}"
                for r in results for t in r.get("test", []) if t["status"] != "ok"]
    refusals += [f"{r['model']} whole documents: "
                 f"{r['documents']['status'].removeprefix('refused: ')}"
                 for r in results if r.get("documents", {}).get("status", "ok") != "ok"]
    refusals += [f"{r['model']} decoding: {r['decode_tokens_per_s'].removeprefix('refused: ')}"
                 for r in results if isinstance(r.get("decode_tokens_per_s"), str)]
    if refusals:
        lines += ["", "Refused: " + "; ".join(refusals) + "."]
    return "\n".join(lines)


def _lr(lr: float | None) -> str:
    return "–" if lr is None else f"{lr:g}"


def sweep_table(runs: list[dict]) -> str:
    lines = [SWEEP, "|" + "---|" * 6]
    for r in runs:
        loss = (f"diverged at step {r['diverged_at']}" if r["diverged_at"] is not None
                else f"{r['val_loss']:.4f}")
        lines.append(f"| {r['model']} | {r['lr']:g} | {r['steps']} | {loss} | "
                     f"{_number(r['tokens_per_s'])} | `{r['stream_hash'][:12]}` |")
    return "\n".join(lines)


def _running_mean(values: list[float], window: int) -> list[float]:
    """Mean of each value and the window - 1 before it (fewer at the start)."""
    means, total = [], 0.0
    for i, value in enumerate(values):
        total += value - (values[i - window] if i >= window else 0.0)
        means.append(total / min(i + 1, window))
    return means


def plot_curves(curves: list[dict], x: str, path: Path, title: str) -> None:
    """Training loss (a running mean over 1/50 of the run) against `x` ("tokens" or "wall_s"),
    one line per model."""
    by_model: dict[str, list[dict]] = {}
    for point in curves:
        by_model.setdefault(point["model"], []).append(point)
    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, (model, points) in enumerate(by_model.items()):
        smooth = _running_mean([p["loss"] for p in points], max(1, len(points) // 50))
        # ten colours, then the same colours dashed: no two models look alike
        ax.plot([p[x] for p in points], smooth, label=model, linewidth=1.2, color=f"C{i % 10}",
                linestyle=("-", "--", ":")[i // 10 % 3])
    ax.set_xlabel({"tokens": "training tokens", "wall_s": "training wall-clock (s)"}[x])
    ax.set_ylabel("training loss (nats/token)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if by_model:
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_report(out: Path, command: str, header: dict[str, str], results: list[dict],
                 runs: list[dict], curves: list[dict], multiples: tuple[int, ...],
                 decode_context: int) -> str:
    """Every output file; returns the markdown (lm.md)."""
    scored = ("loss", "loss_se", "bits_per_byte", "status")
    write_csv([{k: v for k, v in r.items() if k not in ("test", "documents")} | {
        f"{key}@{t['multiple']}x": t.get(key) for t in r.get("test", []) for key in scored} | (
        {f"{key}@documents": r["documents"].get(key)
         for key in (*scored, "windows", "context_length")} if "documents" in r else {})
        for r in results], out / "lm.csv")
    write_csv(runs, out / "lm_sweep.csv")
    write_csv(curves, out / "lm_curves.csv")
    parts = [f"`{command}`", "", "# hololm bench lm", "",
             *(f"- {key}: {value}" for key, value in header.items())]
    for corpus in dict.fromkeys(r["corpus"] for r in results):
        slug = corpus.split()[0]
        chosen = {(r["model"], r["lr"]) for r in results if r["corpus"] == corpus}
        chosen_curves = [c for c in curves
                         if c["corpus"] == corpus and (c["model"], c["lr"]) in chosen]
        for x, name in (("tokens", "loss_vs_tokens"), ("wall_s", "loss_vs_time")):
            plot_curves(chosen_curves, x, out / f"{name}_{slug}.png", corpus)
        parts += ["", f"## {corpus}", "",
                  headline_table([r for r in results if r["corpus"] == corpus], multiples,
                                 decode_context),
                  "", f"![loss vs tokens](loss_vs_tokens_{slug}.png) "
                  f"![loss vs wall-clock](loss_vs_time_{slug}.png)", "",
                  "### Learning-rate sweep (validation loss at the training length)", "",
                  sweep_table([r for r in runs if r["corpus"] == corpus])]
    text = "\n".join(parts) + "\n"
    (out / "lm.md").write_text(text, encoding="utf-8")
    return text
