import csv
import gc
import math

import pytest
import torch

from hololm.bench import speed
from hololm.bench.measure import interleaved_times, peak_memory_bytes
from hololm.bench.speed_report import targets
from hololm.bench.timing import Ceilings
from hololm.models.presets import build_model

TINY = ["--seq_lens", "24", "40", "--decode_contexts", "8", "16", "--train_seq_len", "16",
        "--op_seq_len", "32", "--repeat", "1", "--decode_steps", "2", "--hidden_size", "32",
        "--heads", "2", "--hsn_window", "8", "--prefill_chunk", "5"]


def _rows(path):
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("speed")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(speed, "measure_ceilings", lambda device: Ceilings(100.0, 400.0, 20.0, 30.0))
        assert speed.main(["--output_dir", str(out), *TINY]) == 0
    return out


def test_main_leaves_no_object_frozen(tmp_path):
    """Objects still frozen at exit are never freed, and triton's bindings then print dozens of
    "nanobind: leaked" lines at the exit of every bench run where triton is installed."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(speed, "measure_ceilings", lambda device: Ceilings(100.0, 400.0, 20.0, 30.0))
        assert speed.main(["--output_dir", str(tmp_path), "--sections", "ops", *TINY]) == 0
    assert gc.get_freeze_count() == 0


def test_every_section_writes_csv_and_png(tiny_run):
    for section in speed.SECTIONS:
        assert (tiny_run / f"{section}.csv").is_file(), section
        assert (tiny_run / f"{section}.png").read_bytes()[:4] == b"\x89PNG", section
    text = (tiny_run / "speed.md").read_text()
    assert "hololm bench speed --output_dir" in text and "## Targets" in text


def test_mixer_and_model_rows_cover_every_candidate_and_length(tiny_run):
    mixers = _rows(tiny_run / "mixers.csv")
    assert {(r["mixer"], r["T"]) for r in mixers} == {(m, T) for m in speed.MIXERS
                                                      for T in ("24", "40")}
    for r in mixers:
        assert r["status"] == "ok" and float(r["fwd_ms"]) > 0 and float(r["fwdbwd_ms"]) > 0
        assert int(r["params"]) > 0
    attention = [r for r in mixers if r["mixer"] == "attention"]
    assert all(float(r["speedup_fwdbwd_vs_attention"]) == 1.0 for r in attention)
    models = _rows(tiny_run / "models.csv")
    assert {r["model"] for r in models} == {*speed.MEMORIES, "llama"}
    assert "speedup_fwdbwd_vs_llama" in models[0]


def test_train_decode_and_ops_columns(tiny_run):
    train = _rows(tiny_run / "train.csv")
    assert {r["model"] for r in train} == {*speed.MEMORIES, *speed.BASELINES}
    llama = next(r for r in train if r["model"] == "llama")
    assert float(llama["throughput_vs_llama"]) == 1.0 and float(llama["tokens_per_s"]) > 0
    holo = sorted(int(r["non_embedding_params"]) for r in train if r["model"] in speed.MEMORIES)
    for r in train:  # baselines at about the hololm models' median non-embedding parameters
        if r["model"] in speed.BASELINES:
            assert holo[1] * 0.85 <= int(r["non_embedding_params"]) <= holo[2] * 1.15, r
            assert speed.WIDTH_KEYS[r["model"]] in r["shape"], r
    # the hololm models also train on packed rows, timed beside the plain ones
    assert all(float(r["packed_vs_plain"]) > 0 for r in train if r["model"] in speed.MEMORIES)
    assert all(r["packed_vs_plain"] == "nan" for r in train if r["model"] in speed.BASELINES)
    decode = _rows(tiny_run / "decode.csv")
    assert {(r["model"], r["context"]) for r in decode} == {
        (m, c) for m in (*speed.MEMORIES, "llama") for c in ("8", "16")}
    cache = {(r["model"], r["context"]): float(r["cache_mb"]) for r in decode}
    assert cache["llama", "16"] > cache["llama", "8"]  # the KV cache grows with context
    for m in speed.MEMORIES:  # recurrent states do not
        assert cache[m, "16"] == cache[m, "8"] > 0
    ops = _rows(tiny_run / "ops.csv")
    assert {r["op"] for r in ops} == set(speed.op_bench.CASES)
    assert all(float(r["ceiling"]) in (100.0, 20.0) for r in ops)


def test_no_baseline_trains_with_dropout():
    """Only GPT-2's config has dropout by default; the bench turns it off like the others have."""
    setup = speed.Setup(torch.device("cpu"), torch.float32, 32, 2, 2, 256, 1, 1, 1.0, 1.0, False,
                        0)
    config = speed.build_lm("gpt2", setup, 64).config
    assert config.attn_pdrop == config.resid_pdrop == config.embd_pdrop == 0.0
    assert speed.build_lm("llama", setup, 64).config.attention_dropout == 0.0


@pytest.mark.parametrize(("hidden_size", "heads"), [(32, 2), (256, 4)])
def test_train_baselines_are_matched_to_the_hololm_parameter_count(hidden_size, heads):
    setup = speed.Setup(torch.device("cpu"), torch.float32, hidden_size, 2, heads, 256, 1, 1,
                        1.0, 1.0, False, 0)
    target = speed.matched_param_target(setup, 64)
    holo = sorted(speed.non_embedding_params(m, setup, 64) for m in speed.MEMORIES)
    assert holo[1] <= target <= holo[2]  # the median: HSN's small count does not set it
    for name in speed.BASELINES:
        overrides = speed.match_baseline(name, setup, 64, target)
        model = speed.build_lm(name, setup, 64, **overrides)  # a valid HF config, for real
        count = speed.n_params(model) - speed._embedding_params(model)
        assert abs(count / target - 1) <= 0.15, (name, overrides, count, target)


def test_mamba2_heads_follow_an_expand_override():
    config = build_model("mamba2", "tiny", 64, 32, hidden_size=64, expand=3).config
    assert (config.expand, config.num_heads * config.head_dim) == (3, 3 * 64)


def test_targets_are_computed_from_rows():
    rows = [{"mixer": m, "T": T, "speedup_fwdbwd_vs_attention": s}
            for m, T, s in (("attention", 8192, 1.0), ("holo", 1024, 0.5),
                            ("holo", 2048, 1.5), ("holo", 8192, 6.0))]
    checks = {c["target"]: c for c in targets({"mixers": rows})}
    assert checks["holo mixer fwd+bwd speed-up vs attention at T=8192"]["met"] == "yes"
    crossover = checks["holo mixer crossover T (faster from here on)"]
    assert crossover["measured"] == 2048 and crossover["met"] == "yes"


def test_decode_targets_compare_a_windowed_state_from_its_window_on():
    """HSN's buffer grows until its gate length, then stays: flat is judged from there; a
    state without a window is judged from the first context."""
    rows = [{"model": m, "context": c, "ms_per_token": ms, "cache_mb": mb, "window": w}
            for m, w, points in (("hsn", 2048, ((1024, 1.0, 2.0), (4096, 1.3, 4.0),
                                                 (16384, 1.35, 4.0))),
                                 ("holo", 0, ((1024, 1.0, 0.1), (4096, 1.3, 0.1),
                                              (16384, 1.35, 0.1))))
            for c, ms, mb in points]
    checks = {c["target"]: c for c in targets({"decode": rows})}
    hsn = checks["hsn decode latency, worst long context / 4096"]
    assert hsn["met"] == "yes" and abs(hsn["measured"] - 1.35 / 1.3) < 1e-9
    assert checks["hsn decode cache size, largest / smallest context"]["met"] == "yes"
    assert checks["holo decode latency, worst long context / 1024"]["met"] == "no"


def test_interleaved_times_and_peak_memory():
    calls = []
    times = interleaved_times({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                              device=torch.device("cpu"), repeat=3, warmup=1)
    assert calls == ["a", "b"] * 4 and set(times) == {"a", "b"}
    calls.clear()  # cheap calls get more rounds while the measurement is shorter than min_time_s
    interleaved_times({"a": lambda: calls.append("a")}, device=torch.device("cpu"), repeat=3,
                      warmup=0, min_time_s=60.0, max_repeat=7)
    assert len(calls) == 7
    peak = peak_memory_bytes(lambda: torch.ones(2**24).sum(), torch.device("cpu"))
    assert math.isnan(peak) or peak > 2**25  # 64 MB touched (NaN without /proc)


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit):
        speed.main(["--sections", "nonsense"])
    with pytest.raises(SystemExit):
        speed.main(["--quick", "--full"])
