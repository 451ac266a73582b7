import math

import pytest

from hololm.bench import ops as bench_ops
from hololm.bench.timing import median_time


def test_every_op_case_runs_forward_and_backward():
    for name, make in bench_ops.CASES.items():
        case = make(1, 33, 2, 8)
        bench_ops.fwd_bwd(case.fast, case.params)()
        assert all(p.grad is not None and p.grad.isfinite().all() for p in case.params), name
        assert case.flops > 0 and case.bytes > 0 and case.bound in ("matmul", "copy")


def test_cli_prints_a_table_and_writes_csv(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench_ops, "measure_ceilings",
                        lambda: bench_ops.Ceilings(100.0, 400.0, 20.0, 30.0))
    out = tmp_path / "ops.csv"
    rc = bench_ops.main(["--ops", "matrix_memory", "diagonal_scan", "--seq_lens", "40", "70",
                         "--heads", "2", "--head_dim", "8", "--repeat", "1",
                         "--ref_max_len", "40", "--csv", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| matrix_memory | 70 |" in text and "skipped" in text
    rows = out.read_text().splitlines()
    assert len(rows) == 1 + 4 and rows[0].startswith("T,op,")
    assert not math.isnan(float(rows[1].split(",")[7]))  # the reference ran at T=40


def test_bad_op_name_is_refused():
    with pytest.raises(SystemExit):
        bench_ops.main(["--ops", "nonsense"])


def test_median_time_respects_budget():
    calls = []
    median_time(lambda: calls.append(1), repeat=1000, warmup=0, budget_s=0.0)
    assert len(calls) == 1
