"""Micro-benchmark of the memory ops: fast form vs reference form, forward and forward+backward,
with each op's achieved rate next to the machine's matmul, copy and FFT ceilings measured in this
run.

    python -m hololm.bench.ops                 # default sizes (a few minutes on 2 CPU cores)
    python -m hololm.bench.ops --seq_lens 1024 4096 --csv ops.csv

The rate of an op is counted from a simple cost model (`flops` for matmul-bound forms, `bytes` of
unavoidable reads + writes for memory-bound ones); `% of ceiling` is that rate over the bound that
limits it. The FFT ops are also rated against a bare rfft + irfft pair (`% of FFT`): torch.fft
itself stays well short of the matmul rate on CPU. References are sequential loops: they are
timed with a time budget, and skipped above `--ref_max_len`.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hololm import ops
from hololm.bench.csv_rows import write_csv
from hololm.bench.measure import keep_freed_memory
from hololm.bench.timing import Ceilings, measure_ceilings, median_time, real_fft_flops
from hololm.ops import backends, kernels
from hololm.ops.phasor import phasor_memory_parts


@dataclass
class OpCase:
    """One op at one size: callables returning the output(s) to back-propagate through."""

    name: str
    fast: Callable[[], object]
    ref: Callable[[], object] | None
    params: list[torch.Tensor]
    flops: float  # useful floating-point operations of the fast form's forward pass
    bytes: float  # unavoidable bytes read + written by the forward pass
    bound: str  # "matmul" or "copy": the ceiling that bounds the fast form
    fft: bool = False  # made of torch.fft transforms: also rated against the FFT ceiling


def _leaf(*shape: int, scale: float = 1.0) -> torch.Tensor:
    return (torch.randn(*shape) * scale).requires_grad_()


def _loss(out: object) -> torch.Tensor:
    """Sum every floating output (first element of a tuple is the sequence output)."""
    first = out[0] if isinstance(out, tuple) else out
    first = torch.view_as_real(first) if first.is_complex() else first
    return first.float().square().mean()


def _memory_inputs(B: int, T: int, H: int, D: int) -> tuple[torch.Tensor, ...]:
    """Leaves as the matrix memory layers make them: unit q, k; v; a log-sigmoid forget gate."""
    q = F.normalize(torch.randn(B, T, H, D), dim=-1).requires_grad_()
    k = F.normalize(torch.randn(B, T, H, D), dim=-1).requires_grad_()
    return q, k, _leaf(B, T, H, D), F.logsigmoid(torch.randn(B, T, H) + 2).requires_grad_()


def _chunked_case(name: str, fast, ref, args: tuple, backend: str, intra: int, inter: int,
                  gates: int) -> OpCase:
    """A chunked matrix memory: `intra` matmuls of [C, D] by [D, C] or [C, C] by [C, D] per
    chunk of C = 64, `inter` of [D, D] size per token; reads q, k, v and the gates, writes y."""
    B, T, H, D = args[0].shape
    flops = 2 * B * H * T * 64 * D * intra + 2 * B * H * T * D * D * inter
    n_bytes = 4 * B * T * H * (4 * D + gates)
    return OpCase(name, lambda: fast(*args, backend=backend), lambda: ref(*args), list(args),
                  flops, n_bytes, "matmul")


def matrix_memory_case(B: int, T: int, H: int, D: int, backend: str = "auto") -> OpCase:
    # intra-chunk: scores Q Kᵀ and (scores) V;  inter-chunk: Q S and the state update K Vᵀ
    return _chunked_case("matrix_memory", ops.gated_matrix_memory, ops.holo_scan,
                         _memory_inputs(B, T, H, D), backend, intra=2, inter=2, gates=1)


def delta_rule_case(B: int, T: int, H: int, D: int, backend: str = "auto") -> OpCase:
    # intra-chunk: β K Kᵀ, Q Kᵀ, the triangular solve for [Ũ, W] and (scores) U; inter-chunk:
    # Kᵀ W and Kᵀ Ũ (the chunk's map), W S, Q S and M S
    q, k, v, log_f = _memory_inputs(B, T, H, D)
    return _chunked_case("delta_rule", ops.gated_delta_rule, ops.gated_delta_rule_ref,
                         (q, k, v, torch.rand(B, T, H).requires_grad_(), log_f), backend,
                         intra=4, inter=5, gates=2)


def diagonal_scan_case(B: int, T: int, H: int, D: int, backend: str = "auto") -> OpCase:
    x = _leaf(B, T, H, D)
    log_decay = F.logsigmoid(torch.randn(B, T, H, D) + 3).requires_grad_()
    args = (x, log_decay)
    return OpCase("diagonal_scan", lambda: ops.gated_diagonal_scan(*args, backend=backend),
                  lambda: ops.gated_diagonal_scan_ref(*args), list(args),
                  3 * B * T * H * D, 3 * 4 * B * T * H * D, "copy")


def phasor_case(B: int, T: int, H: int, D: int, backend: str = "auto", parts: bool = False
                ) -> OpCase:
    v, kp, qp = _leaf(B, T, H, D), _leaf(B, T, H, D), _leaf(B, T, H, D)
    freqs = ops.generate_random_phasors(H * D, seed=0).view(H, D)
    fn = phasor_memory_parts if parts else ops.phasor_memory
    fast = lambda: fn(v, kp, qp, freqs, backend=backend)  # noqa: E731
    ref = lambda: ops.phasor_memory_ref(v, kp, qp, freqs)  # noqa: E731
    # reads v, two phases; writes the retrieval (two floats: complex, or the layers' planar
    # [Re, Im] parts, which skip the interleaving pass of the complex result)
    return OpCase("phasor_memory_parts" if parts else "phasor_memory", fast, ref, [v, kp, qp],
                  12 * B * T * H * D, 5 * 4 * B * T * H * D, "copy")


def cumsum_case(B: int, T: int, H: int, D: int, backend: str = "auto") -> OpCase:
    backends.check_name("blocked_cumsum", backend, ())  # one implementation
    x = _leaf(B, T, H * D)
    return OpCase("blocked_cumsum", lambda: ops.blocked_cumsum(x, dim=1),
                  lambda: torch.cumsum(x, dim=1), [x], B * T * H * D, 2 * 4 * B * T * H * D, "copy")


def circular_conv_case(B: int, T: int, H: int, D: int, backend: str = "auto") -> OpCase:
    backends.check_name("fft_circular_conv", backend, ())  # one implementation
    x, key = _leaf(B, T, H * D), _leaf(H * D, scale=(H * D) ** -0.5)
    n = H * D
    # an rfft and an irfft per row (the key's transform is a single row): 2.5 log2(n) / 4 = 5
    # flop per byte moved at n = 256, at the ridge point; rated against the copy bandwidth
    return OpCase("fft_circular_conv", lambda: ops.fft_circular_conv(x, key),
                  lambda: ops.circular_conv_ref(x, key), [x, key],
                  B * T * 2 * real_fft_flops(n), 2 * 4 * B * T * n, "copy", fft=True)


def long_conv_case(B: int, T: int, H: int, D: int, backend: str = "auto") -> OpCase:
    backends.check_name("causal_fft_conv", backend, ())  # one implementation
    x, kernel = _leaf(B, T, H * D), _leaf(T, H * D, scale=T**-0.5)
    n = 2 * T
    # three real FFTs of length n per channel: 7.5 n log2(n) / (8 T) ≈ 25 flop per byte moved at
    # T = 4096, far above the ridge point of any CPU (matmul rate / copy bandwidth ≈ 5 here):
    # compute-bound, so measured against the matmul rate
    return OpCase("causal_fft_conv", lambda: ops.causal_fft_conv(x, kernel),
                  lambda: ops.causal_conv_ref(x, kernel), [x, kernel],
                  B * H * D * 3 * real_fft_flops(n), 2 * 4 * B * T * H * D, "matmul", fft=True)


CASES = {
    "matrix_memory": matrix_memory_case,
    "delta_rule": delta_rule_case,
    "diagonal_scan": diagonal_scan_case,
    "phasor_memory": phasor_case,
    "phasor_memory_parts": functools.partial(phasor_case, parts=True),
    "blocked_cumsum": cumsum_case,
    "fft_circular_conv": circular_conv_case,
    "causal_fft_conv": long_conv_case,
}


SINGLE = ("blocked_cumsum", "fft_circular_conv", "causal_fft_conv")  # no backend choice


def fwd_bwd(fn: Callable[[], object], params: list[torch.Tensor]) -> Callable[[], None]:
    def run() -> None:
        for p in params:
            p.grad = None
        _loss(fn()).backward()
    return run


def forward_only(fn: Callable[[], object]) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad():
            fn()
    return run


def bench_case(case: OpCase, ceilings: Ceilings, run_ref: bool, repeat: int,
               device: torch.device | str = "cpu") -> dict:
    fast_fwd = median_time(forward_only(case.fast), device=device, repeat=repeat)
    fast_fb = median_time(fwd_bwd(case.fast, case.params), device=device, repeat=repeat)
    ref_fwd = ref_fb = float("nan")
    if run_ref and case.ref is not None:
        ref_repeat = max(1, repeat // 2)
        ref_fwd = median_time(forward_only(case.ref), device=device, repeat=ref_repeat,
                              budget_s=10)
        ref_fb = median_time(fwd_bwd(case.ref, case.params), device=device, repeat=ref_repeat,
                             budget_s=10)
    if case.bound == "matmul":
        rate, ceiling, unit = case.flops / fast_fwd / 1e9, ceilings.matmul_fp32_gflops, "GFLOP/s"
    else:
        rate, ceiling, unit = case.bytes / fast_fwd / 1e9, ceilings.copy_gbps, "GB/s"
    return {
        "op": case.name, "fast_fwd_ms": fast_fwd * 1e3, "fast_fwdbwd_ms": fast_fb * 1e3,
        "ref_fwd_ms": ref_fwd * 1e3, "ref_fwdbwd_ms": ref_fb * 1e3,
        "speedup_fwd": ref_fwd / fast_fwd, "speedup_fwdbwd": ref_fb / fast_fb,
        "rate": rate, "unit": unit, "pct_of_ceiling": 100 * rate / ceiling,
        # how close the op comes to the bare transforms it is made of
        "pct_of_fft": (100 * case.flops / fast_fwd / 1e9 / ceilings.fft_gflops if case.fft
                       else math.nan),
    }


def _percent(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.0f}%"


def format_table(rows: list[dict]) -> str:
    head = ("| op | T | fast fwd ms | fast fwd+bwd ms | ref fwd+bwd ms | speed-up fwd+bwd "
            "| achieved | % of ceiling | % of FFT |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        ref = "skipped" if math.isnan(r["ref_fwdbwd_ms"]) else f"{r['ref_fwdbwd_ms']:.1f}"
        speed = "–" if math.isnan(r["speedup_fwdbwd"]) else f"{r['speedup_fwdbwd']:.1f}x"
        lines.append(f"| {r['op']} | {r['T']} | {r['fast_fwd_ms']:.2f} "
                     f"| {r['fast_fwdbwd_ms']:.2f} | {ref} | {speed} | {r['rate']:.1f} {r['unit']} "
                     f"| {r['pct_of_ceiling']:.0f}% | {_percent(r['pct_of_fft'])} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m hololm.bench.ops", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ops", nargs="+", choices=sorted(CASES), default=list(CASES),
                   help="which ops to time (default: all)")
    p.add_argument("--seq_lens", nargs="+", type=int, default=[1024, 4096],
                   help="sequence lengths T to time (default: 1024 4096)")
    p.add_argument("--batch", type=int, default=1, help="batch size B (default: 1)")
    p.add_argument("--heads", type=int, default=4, help="heads H (default: 4)")
    p.add_argument("--head_dim", type=int, default=64, help="per-head width D (default: 64)")
    p.add_argument("--repeat", type=int, default=5, help="timed runs per measurement; the median "
                   "is reported (default: 5)")
    p.add_argument("--ref_max_len", type=int, default=4096,
                   help="skip the sequential references above this T (default: 4096)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice)")
    p.add_argument("--backend", default="auto", help="backend of the memory ops (auto, "
                   "torch, cpu, triton, fla: hololm/ops/backends.py); the other ops have one "
                   "(default: auto)")
    p.add_argument("--csv", default=None, help="also write the rows to this CSV file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # as in `hololm bench speed`: fresh temporaries reuse heap pages instead of page-faulting
    allocator = "keeps freed memory" if keep_freed_memory() else "unchanged (not glibc)"
    ceilings = measure_ceilings()
    print(f"# kernels: {kernels.status()}")
    print(f"# device cpu, {torch.get_num_threads()} threads, malloc {allocator}; "
          f"ceilings: {ceilings.describe()}")
    print(f"# B={args.batch} H={args.heads} D={args.head_dim}, fp32, median of {args.repeat}, "
          f"backend {args.backend}")
    rows = []
    for name in args.ops:
        for T in args.seq_lens:
            case = CASES[name](args.batch, T, args.heads, args.head_dim,
                               **({} if name in SINGLE else {"backend": args.backend}))
            row = {"T": T, **bench_case(case, ceilings, T <= args.ref_max_len, args.repeat)}
            rows.append(row)
            print(format_table([row]).splitlines()[-1], flush=True)
    print()
    print(format_table(rows))
    if args.csv:
        write_csv(rows, args.csv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
