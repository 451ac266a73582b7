"""`hololm bench speed`: the original projects' speed and memory claims (linear-time training,
O(1) inference memory, decoding whose speed does not depend on context) measured side by side in
one run against what a user would pick instead.

Sections (`--sections`, all by default):
  mixers  one token-mixing layer per family vs SDPA softmax attention of the same width and heads:
          forward and forward+backward time and peak memory vs sequence length T
  models  whole models of the same width, depth, heads and vocabulary vs HF LlamaForCausalLM
  train   training tokens/s (forward, loss, backward, AdamW step) vs HF Llama, GPT-2 and Mamba-2
          (Mamba-2's pure-torch path), each baseline's depth and MLP width / expand chosen to
          match the hololm models' median non-embedding parameters
  decode  per-token latency and memory vs context length vs Llama with its KV cache
  ops     achieved GFLOP/s or GB/s of each memory op next to the matmul, copy and FFT ceilings,
          measured again right before each op
Every ratio comes from interleaved timings in this one process (each candidate timed once per
round, median over rounds), next to the ceilings measured at the start of the same run. Every
candidate runs under the same precision: bfloat16 autocast where bf16 matmuls pay (CUDA, or a
CPU whose bf16 matmul measured >= 1.5x its fp32 one in this run), float32 otherwise (`--dtype`).
Outputs in --output_dir: <section>.csv and <section>.png per section, speed.md (every table and
the speed goals, met or missed), the markdown also printed.

    hololm bench speed --quick --output_dir runs/speed     # a few minutes on 2 CPU cores
    hololm bench speed --output_dir runs/speed             # the full profile (T up to 32k on CPU)
    hololm bench speed --device cuda --output_dir runs/gpu # GPU: bf16, T up to 128k

Decode: hololm models prefill the context for real (linear time, in chunks); Llama's KV cache is
filled with random keys and values of the context length (`--real_prefill` runs the quadratic
prefill instead): a decoding step's cost depends on the cache's size, not on its values.
"""

from __future__ import annotations

import argparse
import gc
import math
import shlex
import statistics
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache, PreTrainedModel

from hololm.bench import ops as op_bench
from hololm.bench.csv_rows import write_csv
from hololm.bench.measure import (
    interleaved_times,
    is_out_of_memory,
    keep_freed_memory,
    peak_memory_bytes,
    release_memory,
    resident_bytes,
)
from hololm.bench.speed_report import write_report
from hololm.bench.timing import Ceilings, measure_ceilings
from hololm.models import backbone
from hololm.models.cache import cache_argument, cache_of
from hololm.models.presets import build_config, build_model
from hololm.models.registry import BASELINES, MEMORIES, NAMES, matched_shape
from hololm.ops import kernels, triton_kernels

SECTIONS = ("mixers", "models", "train", "decode", "ops")
MIXERS = ("attention", *MEMORIES)
MB = 2**20
# train section: the config field that sets each baseline's MLP width (Mamba-2: its expansion),
# the factors tried on the family's default, nearest the default first (by |log f|), and how
# close to the target parameter count a config must come to end the search
WIDTH_KEYS = {"llama": "intermediate_size", "gpt2": "n_inner", "mamba2": "expand"}
WIDTH_FACTORS = (1.0, 1.25, 0.75, 1.5, 0.5, 2.0)
MATCH_TOLERANCE = 0.05


@dataclass(frozen=True)
class Profile:
    seq_lens: tuple[int, ...]
    decode_contexts: tuple[int, ...]
    train_seq_len: int
    op_seq_len: int
    repeat: int
    decode_steps: int
    budget_s: float  # a candidate stops repeating once its timed calls took this long


def _powers(lo: int, hi: int) -> tuple[int, ...]:
    return tuple(2**i for i in range(lo, hi + 1))


PROFILES = {
    ("quick", "cpu"): Profile(_powers(9, 13), (1024, 4096, 16384), 4096, 4096, 3, 96, 15.0),
    ("full", "cpu"): Profile(_powers(9, 15), _powers(10, 16), 4096, 16384, 5, 160, 40.0),
    ("quick", "cuda"): Profile(_powers(10, 15), (1024, 16384, 65536), 4096, 16384, 5, 96, 30.0),
    ("full", "cuda"): Profile(_powers(9, 17), _powers(10, 17), 8192, 65536, 10, 192, 60.0),
}


@dataclass
class Setup:
    """What every section shares: device, precision, shapes, repetitions."""

    device: torch.device
    dtype: torch.dtype  # bfloat16: autocast around every forward
    hidden_size: int
    num_layers: int
    heads: int
    vocab_size: int
    batch: int
    repeat: int
    budget_s: float
    min_time_s: float  # cheap candidates: more rounds, until a measurement took this long
    flash: bool  # CUDA: force SDPA's FlashAttention backend in mixers / models / train
    seed: int

    def autocast(self) -> AbstractContextManager:
        return torch.autocast(self.device.type, dtype=torch.bfloat16,
                              enabled=self.dtype == torch.bfloat16)

    def attention_backend(self) -> AbstractContextManager:
        if not (self.flash and self.device.type == "cuda"):
            return nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel
        return sdpa_kernel([SDPBackend.FLASH_ATTENTION])


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_mixer(name: str, setup: Setup, seq_len: int) -> torch.nn.Module:
    """One layer of kind `name` at the shared width and heads, as its family's model builds it
    (holo: hd_dim = 2·d; hologpt: 64 x 64 memories, one per 64 channels; hsn: the whole
    HoloSpectralBlock, whose gate spans `seq_len` taps)."""
    shape = matched_shape(name, setup.hidden_size, 1, setup.heads)
    return backbone.build_mixer(name, build_config(name, "tiny", setup.vocab_size, seq_len,
                                                   **shape))


# GPT-2's config defaults to dropout 0.1 (no other candidate has dropout), and attention dropout
# also sends CPU SDPA to its unfused math path: a training step at T=4096 took 3.6 s, 1.1 without
NO_DROPOUT = {"gpt2": {"attn_pdrop": 0.0, "resid_pdrop": 0.0, "embd_pdrop": 0.0}}


def _build(model_type: str, setup: Setup, seq_len: int, **overrides) -> PreTrainedModel:
    shape = {**matched_shape(model_type, setup.hidden_size, setup.num_layers, setup.heads),
             **NO_DROPOUT.get(model_type, {}), **overrides}
    return build_model(model_type, "tiny", setup.vocab_size, seq_len, **shape)


def build_lm(model_type: str, setup: Setup, seq_len: int, **overrides) -> PreTrainedModel:
    """A whole model at the shared width, depth, heads and vocabulary (baselines via HF);
    `overrides` (say a matched baseline's depth) win over the shared shape."""
    torch.manual_seed(setup.seed)
    return _build(model_type, setup, seq_len, **overrides).to(setup.device)


def _nan_row() -> dict:
    return {"fwd_ms": math.nan, "fwdbwd_ms": math.nan, "fwd_peak_mb": math.nan,
            "fwdbwd_peak_mb": math.nan}


def _time_and_memory(candidates: dict[str, tuple[Callable, Callable]], setup: Setup
                     ) -> dict[str, dict]:
    """Forward and forward+backward of every candidate: the peak memory of a first call each
    (which is also the warm-up), then interleaved median times. Candidates that run out of
    memory get status "oom"."""
    results: dict[str, dict] = {}
    live, peaks = {}, {}
    for name, (fwd, fb) in candidates.items():
        try:  # a candidate that does not fit is dropped, not fatal
            peaks[name] = (peak_memory_bytes(fwd, setup.device) / MB,
                           peak_memory_bytes(fb, setup.device) / MB)
            live[name] = (fwd, fb)
        except Exception as err:  # noqa: BLE001 - only out-of-memory is tolerated
            if not is_out_of_memory(err):
                raise
            results[name] = {**_nan_row(), "status": "oom"}
        release_memory(setup.device)
    fns = {}
    for name, (fwd, fb) in live.items():
        fns[f"{name}/fwd"], fns[f"{name}/fb"] = fwd, fb
    times = interleaved_times(fns, device=setup.device, repeat=setup.repeat, warmup=0,
                              budget_s=setup.budget_s, min_time_s=setup.min_time_s)
    for name in live:
        results[name] = {"fwd_ms": 1e3 * times[f"{name}/fwd"],
                         "fwdbwd_ms": 1e3 * times[f"{name}/fb"],
                         "fwd_peak_mb": peaks[name][0], "fwdbwd_peak_mb": peaks[name][1],
                         "status": "ok"}
    return results


def _add_speedups(rows: list[dict], key: str, baseline: str) -> None:
    """speedup_* = baseline time / this row's time at the same T."""
    base = {r["T"]: r for r in rows if r[key] == baseline}
    for r in rows:
        b = base.get(r["T"])
        for m in ("fwd", "fwdbwd"):
            r[f"speedup_{m}_vs_{baseline}"] = (b[f"{m}_ms"] / r[f"{m}_ms"]) if b else math.nan


def run_mixers(setup: Setup, names: list[str], seq_lens: list[int]) -> list[dict]:
    rows = []
    for T in tqdm(seq_lens, desc="mixers", unit="T"):
        candidates, sizes = {}, {}
        for name in names:
            torch.manual_seed(setup.seed)
            layer = build_mixer(name, setup, T).to(setup.device)
            sizes[name] = n_params(layer)
            x = torch.randn(setup.batch, T, setup.hidden_size, device=setup.device)
            x_grad = x.clone().requires_grad_()

            def fwd(layer=layer, x=x):
                with torch.no_grad(), setup.autocast(), setup.attention_backend():
                    layer(x)

            def fb(layer=layer, x=x_grad):
                layer.zero_grad(set_to_none=True)
                x.grad = None
                with setup.autocast(), setup.attention_backend():
                    y, _ = layer(x, None, 0)
                    loss = y.float().square().mean()
                loss.backward()

            candidates[name] = (fwd, fb)
        results = _time_and_memory(candidates, setup)
        rows += [{"mixer": n, "params": sizes[n], "T": T, **results[n]} for n in names]
        del candidates
        release_memory(setup.device)
    if "attention" in names:
        _add_speedups(rows, "mixer", "attention")
    return rows


def run_models(setup: Setup, names: list[str], seq_lens: list[int], baseline: str
               ) -> list[dict]:
    rows = []
    for T in tqdm(seq_lens, desc="models", unit="T"):
        candidates, sizes = {}, {}
        for name in names:
            model = build_lm(name, setup, T)
            sizes[name] = n_params(model)
            ids = torch.randint(setup.vocab_size, (setup.batch, T), device=setup.device)

            def fwd(model=model, ids=ids):
                model.eval()
                with torch.no_grad(), setup.autocast(), setup.attention_backend():
                    model(input_ids=ids, use_cache=False)

            def fb(model=model, ids=ids):
                model.train()
                model.zero_grad(set_to_none=True)
                with setup.autocast(), setup.attention_backend():
                    loss = model(input_ids=ids, labels=ids, use_cache=False).loss
                loss.backward()

            candidates[name] = (fwd, fb)
        results = _time_and_memory(candidates, setup)
        rows += [{"model": n, "params": sizes[n], "T": T, **results[n]} for n in names]
        del candidates
        release_memory(setup.device)
    if baseline in names:
        _add_speedups(rows, "model", baseline)
    return rows


def _embedding_params(model: PreTrainedModel) -> int:
    """Token embeddings (tied with the head in every preset) plus learned position tables."""
    count = model.get_input_embeddings().weight.numel()
    wpe = getattr(getattr(model, "transformer", None), "wpe", None)  # GPT-2
    return count + (wpe.weight.numel() if wpe is not None else 0)


def non_embedding_params(model_type: str, setup: Setup, seq_len: int, **overrides) -> int:
    """Counted on the meta device: no memory, no initialisation, a few ms per config."""
    with torch.device("meta"):
        model = _build(model_type, setup, seq_len, **overrides)
    return n_params(model) - _embedding_params(model)


def matched_param_target(setup: Setup, seq_len: int) -> int:
    """The baselines' target: the median non-embedding parameters of every hololm family at the
    shared shape, whether or not they run, so that HSN, far smaller by design, does not set it.
    Non-embedding, as GPT-2's position table grows with T."""
    return round(statistics.median(non_embedding_params(m, setup, seq_len)
                                   for m in MEMORIES))


def match_baseline(model_type: str, setup: Setup, seq_len: int, target: int) -> dict:
    """Overrides (depth and MLP width / expand) giving a baseline about `target` non-embedding
    parameters at the shared width and heads: for each width factor, nearest the family's
    default first, the depth in 1..4·num_layers whose count is nearest; the first within
    MATCH_TOLERANCE wins, else the nearest config seen. Width alone keeps the layer count, depth
    alone is too coarse at a few layers (one Llama layer is ~40% of two), hence both."""
    key = WIDTH_KEYS[model_type]
    with torch.device("meta"):
        config = _build(model_type, setup, seq_len).config
    default = getattr(config, key) or 4 * setup.hidden_size  # GPT-2's n_inner None = 4·d
    best, best_err = {}, math.inf
    for factor in WIDTH_FACTORS:
        value = factor * default
        if key == "expand":  # an int in HF's config, in whole heads: num_heads = expand·d/head_dim
            if not value.is_integer() or (value * setup.hidden_size) % config.head_dim:
                continue
        width = {key: round(value)}
        for depth in range(1, 4 * setup.num_layers + 1):
            overrides = {"num_hidden_layers": depth, **width}
            count = non_embedding_params(model_type, setup, seq_len, **overrides)
            if abs(count / target - 1) < best_err:
                best, best_err = overrides, abs(count / target - 1)
            if count > target:  # counts grow with depth: deeper only gets further away
                break
        if best_err <= MATCH_TOLERANCE:
            break
    return best


def _shape(model: PreTrainedModel, model_type: str) -> str:
    layers = f"{model.config.num_hidden_layers} layers"
    key = WIDTH_KEYS.get(model_type)
    return f"{layers}, {key}={getattr(model.config, key)}" if key else layers


DOCUMENTS_PER_ROW = 4  # the train section's packed rows: documents of random lengths


def packed_positions(batch: int, seq_len: int, device: torch.device) -> torch.Tensor:
    """[batch, seq_len] position_ids of rows packing `DOCUMENTS_PER_ROW` documents each, cut at
    fixed random points (seeded): what the trainer passes for packed data."""
    generator = torch.Generator().manual_seed(0)
    starts = torch.zeros(batch, seq_len, dtype=torch.bool)
    starts[:, 0] = True
    for row in range(batch):
        cuts = torch.randperm(seq_len - 1, generator=generator)[:DOCUMENTS_PER_ROW - 1] + 1
        starts[row, cuts] = True
    index = torch.arange(seq_len).expand(batch, seq_len)
    return (index - torch.where(starts, index, 0).cummax(1).values).to(device)


def run_train(setup: Setup, names: list[str], seq_len: int) -> list[dict]:
    """Training steps side by side; every hololm model also on packed rows (position_ids
    restarting at document starts, where every memory resets), timed in the same interleaved
    run, so `packed_vs_plain` is the cost of reading documents apart."""
    steps, info = {}, {}
    target = matched_param_target(setup, seq_len)
    positions = packed_positions(setup.batch, seq_len, setup.device)
    for name in tqdm(names, desc="train: build", unit="model"):
        overrides = match_baseline(name, setup, seq_len, target) if name in BASELINES else {}
        model = build_lm(name, setup, seq_len, **overrides).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        ids = torch.randint(setup.vocab_size, (setup.batch, seq_len), device=setup.device)

        def step(model=model, optimizer=optimizer, ids=ids, packed=None):
            with setup.autocast(), setup.attention_backend():
                extra = {} if packed is None else {"position_ids": packed}
                loss = model(input_ids=ids, labels=ids, use_cache=False, **extra).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        steps[name] = step
        if name not in BASELINES:
            steps[name + " packed"] = partial(step, packed=positions)
        total = n_params(model)
        info[name] = {"params": total, "non_embedding_params": total - _embedding_params(model),
                      "shape": _shape(model, name)}
    times = interleaved_times(steps, device=setup.device, repeat=setup.repeat, warmup=1,
                              budget_s=setup.budget_s, min_time_s=setup.min_time_s)
    rows = [{"model": n, **info[n], "T": seq_len, "batch": setup.batch,
             "step_ms": 1e3 * times[n], "tokens_per_s": setup.batch * seq_len / times[n],
             "packed_vs_plain": times[n] / times[n + " packed"] if n + " packed" in times
             else math.nan}
            for n in names]
    for base in ("llama", "mamba2"):
        ref = next((r["tokens_per_s"] for r in rows if r["model"] == base), math.nan)
        for r in rows:
            r[f"throughput_vs_{base}"] = r["tokens_per_s"] / ref
    return rows


def cache_nbytes(cache: object) -> float:
    """Bytes of a generation cache: HoloCache states, or a DynamicCache's keys and values."""
    if hasattr(cache, "nbytes"):
        return float(cache.nbytes())
    total = 0
    for layer in getattr(cache, "layers", []):
        for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
    return float(total)


def _random_kv_cache(model: PreTrainedModel, setup: Setup, context: int) -> DynamicCache:
    """A Llama KV cache holding `context` random keys and values per layer."""
    c = model.config
    kv_heads = c.num_key_value_heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    dtype = torch.bfloat16 if setup.dtype == torch.bfloat16 else model.dtype
    cache = DynamicCache()
    for i in range(c.num_hidden_layers):
        shape = (setup.batch, kv_heads, context, head_dim)
        cache.update(torch.randn(shape, device=setup.device, dtype=dtype),
                     torch.randn(shape, device=setup.device, dtype=dtype), i)
    return cache


@torch.no_grad()
def _prefill(model: PreTrainedModel, setup: Setup, context: int, chunk: int) -> object:
    """Run `context` random tokens through the model in chunks; return its cache."""
    cache, argument = None, cache_argument(model)
    for start in range(0, context, chunk):
        n = min(chunk, context - start)
        ids = torch.randint(setup.vocab_size, (setup.batch, n), device=setup.device)
        with setup.autocast():
            cache = cache_of(model(input_ids=ids, use_cache=True,
                                   **({argument: cache} if cache is not None else {})))
    return cache


def run_decode(setup: Setup, names: list[str], contexts: list[int], steps: int,
               real_prefill: bool, hsn_window: int, prefill_chunk: int) -> list[dict]:
    """Per-token latency at each context, every (model, context) cache built first, then decoding
    steps interleaved over all of them round by round."""
    decoders, info = {}, {}
    seq_len = max(contexts) + steps + 8
    total = len(names) * len(contexts)
    with tqdm(total=total, desc="decode: prefill", unit="cache") as bar:
        for name in names:
            model = build_lm(name, setup, hsn_window if name == "hsn" else seq_len).eval()
            for context in contexts:
                release_memory(setup.device)
                before = (torch.cuda.memory_allocated(setup.device)
                          if setup.device.type == "cuda" else resident_bytes())
                if name not in BASELINES or real_prefill:
                    cache = _prefill(model, setup, context, prefill_chunk)
                else:
                    cache = _random_kv_cache(model, setup, context)
                release_memory(setup.device)
                after = (torch.cuda.memory_allocated(setup.device)
                         if setup.device.type == "cuda" else resident_bytes())
                info[name, context] = {"params": n_params(model),
                                       "cache_mb": cache_nbytes(cache) / MB,
                                       "resident_mb": (after - before) / MB}
                token = torch.randint(setup.vocab_size, (setup.batch, 1), device=setup.device)

                cache_kwargs = {cache_argument(model): cache}

                def step(model=model, cache_kwargs=cache_kwargs, token=token):
                    with torch.no_grad(), setup.autocast():
                        model(input_ids=token, use_cache=True, **cache_kwargs)

                decoders[name, context] = step
                bar.update()
    rounds = max(5, setup.repeat)  # decoding steps are cheap: more rounds against noise
    per_round = max(1, steps // rounds)
    fns = {key: (lambda fn=fn: [fn() for _ in range(per_round)]) for key, fn in decoders.items()}
    times = interleaved_times({f"{k[0]}@{k[1]}": fn for k, fn in fns.items()},
                              device=setup.device, repeat=rounds, warmup=1,
                              budget_s=setup.budget_s)
    rows = []
    for name in names:
        first = None
        for context in contexts:
            ms = 1e3 * times[f"{name}@{context}"] / per_round
            first = ms if first is None else first
            rows.append({"model": name, "context": context, "ms_per_token": ms,
                         "latency_vs_first": ms / first, **info[name, context],
                         # HSN keeps the inputs seen up to its gate length: bounded from there
                         "window": hsn_window if name == "hsn" else 0})
    return rows


# ops with Triton kernels on CUDA (the matrix memory's fla path takes half-precision inputs
# only; this section times float32 ops)
FUSED_ON_CUDA = ("diagonal_scan", "phasor_memory", "phasor_memory_parts")


def run_ops(setup: Setup, seq_len: int) -> list[dict]:
    """Each op against ceilings measured again right before it: the run's first ceilings can be
    many minutes old by the time this section runs on a shared machine. On CUDA the ops with
    Triton kernels are also run as eager PyTorch, the row after, so one run tells what the
    kernels bought."""
    rows = []
    head_dim = setup.hidden_size // setup.heads
    for name, make in tqdm(op_bench.CASES.items(), desc="ops", unit="op"):
        variants = [(name, "auto")]
        if (setup.device.type == "cuda" and name in FUSED_ON_CUDA and triton_kernels.enabled()
                and triton_kernels.importable()):
            variants.append((f"{name} (eager)", "torch"))
        for label, backend in variants:
            ceilings = measure_ceilings(setup.device)
            torch.manual_seed(setup.seed)
            with torch.device(setup.device):
                case = make(setup.batch, seq_len, setup.heads, head_dim, backend=backend)
            row = op_bench.bench_case(case, ceilings, False, setup.repeat, setup.device)
            ceiling = (ceilings.matmul_fp32_gflops if row["unit"] == "GFLOP/s"
                       else ceilings.copy_gbps)
            rows.append({"op": label, "T": seq_len, "fwd_ms": row["fast_fwd_ms"],
                         "fwdbwd_ms": row["fast_fwdbwd_ms"], "achieved": row["rate"],
                         "unit": row["unit"], "ceiling": ceiling,
                         "pct_of_ceiling": row["pct_of_ceiling"],
                         "pct_of_fft": row["pct_of_fft"]})
            del case
    return rows


def _ints(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive int, got {text}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="hololm bench speed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    profile = p.add_mutually_exclusive_group()
    profile.add_argument("--quick", action="store_true",
                         help="quick profile: T up to 8192, decode contexts up to 16k on CPU "
                              "(a few minutes on 2 cores)")
    profile.add_argument("--full", action="store_true",
                         help="full profile (the default): T 512..32k and decode 1k..64k on CPU, "
                              "T up to 128k and decode up to 128k on CUDA")
    p.add_argument("--output_dir", default="speed_results",
                   help="where the CSVs, speed.md and the PNG plots go (default: speed_results)")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                   help="which sections to run (default: all)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                   help="float32, or bfloat16 autocast around every forward (all candidates "
                        "alike); auto = bfloat16 on CUDA, and on a CPU whose bf16 matmul measured "
                        "at least 1.5x its fp32 matmul at the start of the run, else float32")
    p.add_argument("--attention_backend", choices=("auto", "flash"), default="flash",
                   help="CUDA only: 'flash' forces SDPA's FlashAttention backend for the "
                        "attention baselines (training-shaped calls), 'auto' lets SDPA choose "
                        "(default: flash)")
    p.add_argument("--hidden_size", type=_ints, default=256, help="model width d (default: 256)")
    p.add_argument("--num_layers", type=_ints, default=2,
                   help="layers of the whole models (default: 2)")
    p.add_argument("--heads", type=_ints, default=4, help="attention / memory heads (default: 4)")
    p.add_argument("--vocab_size", type=_ints, default=256,
                   help="vocabulary of the whole models; small, like the byte tokenizer, so that "
                        "the LM head does not hide the token mixers (default: 256)")
    p.add_argument("--batch", type=_ints, default=1, help="batch size (default: 1)")
    p.add_argument("--mixers", nargs="+", choices=MIXERS, default=list(MIXERS),
                   help="mixers to compare ('attention' is the baseline; default: all)")
    p.add_argument("--models", nargs="+", choices=NAMES,
                   default=[*MEMORIES, "llama"],
                   help="whole models for the models and decode sections (default: the hololm "
                        "families and llama)")
    p.add_argument("--train_models", nargs="+", choices=NAMES,
                   default=[*MEMORIES, *BASELINES],
                   help="models for the training-throughput section (default: all)")
    p.add_argument("--seq_lens", nargs="+", type=_ints, default=None,
                   help="sequence lengths of the mixers and models sections (default: profile)")
    p.add_argument("--decode_contexts", nargs="+", type=_ints, default=None,
                   help="context lengths for decoding (default: profile)")
    p.add_argument("--train_seq_len", type=_ints, default=None,
                   help="sequence length of the training-throughput section (default: profile)")
    p.add_argument("--op_seq_len", type=_ints, default=None,
                   help="sequence length of the ops section (default: profile)")
    p.add_argument("--repeat", type=_ints, default=None,
                   help="timed rounds per measurement, the median is reported (default: profile)")
    p.add_argument("--decode_steps", type=_ints, default=None,
                   help="timed decoding steps per model and context (default: profile)")
    p.add_argument("--budget_s", type=float, default=None,
                   help="stop repeating a candidate once its timed runs took this long; it keeps "
                        "at least one (default: profile, 15 s quick / 40 s full on CPU)")
    p.add_argument("--real_prefill", action="store_true",
                   help="prefill Llama's KV cache by running the context (quadratic) instead of "
                        "filling it with random keys and values")
    p.add_argument("--prefill_chunk", type=_ints, default=8192,
                   help="tokens per prefill chunk in the decode section (default: 8192)")
    p.add_argument("--hsn_window", type=_ints, default=2048,
                   help="decode section: HSN's spectral-gate length max_seq_len, i.e. its "
                        "training length (default: 2048)")
    p.add_argument("--default_malloc", action="store_true",
                   help="CPU: keep glibc's malloc defaults, where every fresh large allocation "
                        "page-faults, instead of keeping freed memory for reuse (applies to all "
                        "candidates alike)")
    p.add_argument("--threads", type=_ints, default=None,
                   help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    return p.parse_args(argv)


def resolve_dtype(name: str, device: torch.device, ceilings: Ceilings) -> torch.dtype:
    """--dtype: bfloat16 autocast where bf16 matmuls are fast (CUDA; a CPU with native bf16,
    measured), float32 otherwise."""
    if name != "auto":
        return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]
    fast = (device.type == "cuda"
            or ceilings.matmul_bf16_gflops >= 1.5 * ceilings.matmul_fp32_gflops)
    return torch.bfloat16 if fast else torch.float32


def make_setup(args: argparse.Namespace, ceilings: Ceilings) -> tuple[Setup, Profile]:
    device = torch.device(args.device)
    kind = "cuda" if device.type == "cuda" else "cpu"
    profile = PROFILES["quick" if args.quick else "full", kind]
    overrides = {"seq_lens": args.seq_lens and tuple(args.seq_lens),
                 "decode_contexts": args.decode_contexts and tuple(args.decode_contexts),
                 "train_seq_len": args.train_seq_len, "op_seq_len": args.op_seq_len,
                 "repeat": args.repeat, "decode_steps": args.decode_steps,
                 "budget_s": args.budget_s}
    profile = replace(profile, **{k: v for k, v in overrides.items() if v})
    dtype = resolve_dtype(args.dtype, device, ceilings)
    if args.hidden_size % args.heads:
        raise SystemExit(f"--hidden_size {args.hidden_size} must be divisible by --heads "
                         f"{args.heads}")
    setup = Setup(device, dtype, args.hidden_size, args.num_layers, args.heads, args.vocab_size,
                  args.batch, profile.repeat, profile.budget_s, profile.budget_s / 3,
                  args.attention_backend == "flash", args.seed)
    return setup, profile


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # the objects of the imports (transformers: ~0.6 s per full collection) are never garbage:
    # keep them out of the collections that precede every memory measurement, until the end
    # (objects still frozen at exit are never freed: triton's nanobind bindings then print
    # dozens of "leaked" lines)
    gc.freeze()
    try:
        return _run(args, argv)
    finally:
        gc.unfreeze()


def _run(args: argparse.Namespace, argv: list[str] | None) -> int:
    malloc = "glibc defaults" if args.default_malloc else (
        "keeps freed memory" if keep_freed_memory() else "unchanged (not glibc)")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    ceilings = measure_ceilings(device)
    setup, profile = make_setup(args, ceilings)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    sections = {
        "mixers": lambda: run_mixers(setup, args.mixers, list(profile.seq_lens)),
        "models": lambda: run_models(setup, args.models, list(profile.seq_lens), "llama"),
        "train": lambda: run_train(setup, args.train_models, profile.train_seq_len),
        "decode": lambda: run_decode(setup, args.models, list(profile.decode_contexts),
                                     profile.decode_steps, args.real_prefill, args.hsn_window,
                                     args.prefill_chunk),
        "ops": lambda: run_ops(setup, profile.op_seq_len),
    }
    results: dict[str, list[dict]] = {}
    for section, run in sections.items():
        if section in args.sections:
            results[section] = run()
            if results[section]:  # kept if a later section fails
                write_csv(results[section], out / f"{section}.csv")
    header = {
        "command": "hololm bench speed " + shlex.join(sys.argv[1:] if argv is None else argv),
        "device": (torch.cuda.get_device_name(setup.device) if setup.device.type == "cuda"
                   else f"cpu, {torch.get_num_threads()} threads"),
        "dtype": ("bfloat16 autocast around every candidate's forward"
                  if setup.dtype == torch.bfloat16 else "float32"),
        "shape": (f"d={setup.hidden_size}, heads={setup.heads}, layers={setup.num_layers}, "
                  f"vocab={setup.vocab_size}, batch={setup.batch}"),
        "ceilings": ceilings.describe(),
        "malloc": malloc,
        "kernels": (kernels.status() if setup.device.type == "cpu"
                    else triton_kernels.status()),
        "repeat": (f"median of {setup.repeat} or more interleaved rounds (up to 15 while a "
                   f"measurement took < {setup.min_time_s:.0f} s)"),
    }
    print(write_report(out, header, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
