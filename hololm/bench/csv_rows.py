"""Benchmark rows as a CSV file: one column per key, in the order the keys first appear."""

from __future__ import annotations

import csv
from pathlib import Path


def write_csv(rows: list[dict], path: str | Path) -> None:
    """`rows` (dicts; a key missing from a row leaves its cell empty) as CSV at `path`."""
    fields = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
