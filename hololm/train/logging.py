"""Run logs: `log.csv` (one row per logged step), TensorBoard scalars when `tensorboard` is
installed, and a `loss.png` curve drawn with matplotlib's Agg canvas (no display, no global
backend switch). Only the main process should create a `RunLogger`."""

from __future__ import annotations

import csv
import importlib.util
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

CSV_COLUMNS = ("step", "loss", "lr", "tokens_per_s", "val_loss", "val_ppl", "val_bpb")


class RunLogger:
    """Writes `<output_dir>/log.csv` and `loss.png` (and TensorBoard events under
    `<output_dir>/tensorboard`). `rows` are earlier records, written first: a resumed run
    rewrites the log from its checkpoint's history, dropping rows of steps it will redo."""

    def __init__(self, output_dir: str | Path, rows: Iterable[dict[str, Any]] = (),
                 start_step: int = 0, tensorboard: bool = True) -> None:
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.output_dir / "log.csv"
        self.png_path = self.output_dir / "loss.png"
        self._file = open(self.csv_path, "w", newline="", encoding="utf-8")  # open for the run
        self._csv = csv.DictWriter(self._file, CSV_COLUMNS, extrasaction="ignore")
        self._csv.writeheader()
        self._csv.writerows(rows)
        self._file.flush()
        self._tb = None
        if tensorboard and importlib.util.find_spec("tensorboard") is not None:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events a crashed run wrote after the step it resumes from
            self._tb = SummaryWriter(str(self.output_dir / "tensorboard"),
                                     purge_step=start_step + 1 if start_step else None)

    def log(self, record: dict[str, Any]) -> None:
        """One CSV row (missing columns left empty) and its scalars to TensorBoard."""
        self._csv.writerow(record)
        self._file.flush()
        if self._tb is not None:
            for key in CSV_COLUMNS[1:]:
                if record.get(key) is not None:
                    self._tb.add_scalar(key, record[key], record["step"])
            self._tb.flush()

    def plot(self, history: list[dict[str, Any]], title: str = "") -> None:
        """Redraw loss.png: the training loss of every step, its running mean, and the
        validation loss at each evaluation. Written to a temp file and renamed, so a viewer
        never sees half an image."""
        plot_loss_curve(history, self.png_path, title)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def plot_loss_curve(history: list[dict[str, Any]], path: str | Path, title: str = "") -> None:
    path = Path(path)
    fig = Figure(figsize=(7, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    # a skipped step's non-finite loss stays in log.csv but would blank the running mean
    train = [(r["step"], r["loss"]) for r in history
             if r.get("loss") is not None and math.isfinite(r["loss"])]
    if train:
        steps, losses = zip(*train, strict=True)
        ax.plot(steps, losses, color="tab:blue", alpha=0.3, linewidth=0.8, label="train")
        ax.plot(steps, _running_mean(losses, max(1, len(losses) // 50)), color="tab:blue",
                label="train (running mean)")
    val = [(r["step"], r["val_loss"]) for r in history if r.get("val_loss") is not None]
    if val:
        steps, losses = zip(*val, strict=True)
        ax.plot(steps, losses, "o-", color="tab:orange", markersize=4, label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats / token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if train or val:
        ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}-{os.getpid()}.png")
    fig.savefig(tmp)
    os.replace(tmp, path)


def _running_mean(values: tuple[float, ...], window: int) -> list[float]:
    """Mean of the last `window` values at each point (fewer at the start)."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out
