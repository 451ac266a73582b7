"""RunLogger: CSV rows (empty cells for metrics not measured), a rewrite on resume, the PNG."""

from __future__ import annotations

import csv

from hololm.train.logging import CSV_COLUMNS, RunLogger


def test_csv_and_png(tmp_path):
    history = [{"step": s, "loss": 5.0 / s, "lr": 1e-3, "tokens_per_s": 100.0}
               for s in range(1, 11)]
    history[4].update(val_loss=1.2, val_ppl=3.3, val_bpb=1.7)
    logger = RunLogger(tmp_path, tensorboard=False)
    for record in history:
        logger.log(record)
    logger.plot(history, "test run")
    logger.close()
    with open(tmp_path / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 10
    assert rows[4]["val_loss"] == "1.2" and rows[3]["val_loss"] == ""
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    # a resumed run starts the file again from its checkpoint's history
    RunLogger(tmp_path, rows=history[:3], start_step=3, tensorboard=False).close()
    with open(tmp_path / "log.csv", newline="") as f:
        assert [r["step"] for r in csv.DictReader(f)] == ["1", "2", "3"]
