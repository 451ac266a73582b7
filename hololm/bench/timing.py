"""Wall-clock timing and the machine's ceilings (matmul rate, copy bandwidth, FFT rate), measured in
the same process as the thing being compared so that ratios are honest on a shared or throttled
machine."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn: Callable[[], object], *, device: torch.device | str = "cpu", repeat: int = 5,
                warmup: int = 1, budget_s: float = 20.0) -> float:
    """Median seconds of `fn()` over `repeat` runs after `warmup` runs; stops early when the runs so
    far exceed `budget_s` (slow references), keeping at least one timed run."""
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    _sync(device)
    times: list[float] = []
    start = time.perf_counter()
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > budget_s:
            break
    return statistics.median(times)


@dataclass(frozen=True)
class Ceilings:
    """What the hardware reaches on plain kernels: the yardstick for each op's achieved rate."""

    matmul_fp32_gflops: float
    matmul_bf16_gflops: float
    copy_gbps: float
    fft_gflops: float  # torch.fft's own rate: what bounds the FFT ops short of the matmul rate

    def describe(self) -> str:
        return (f"matmul fp32 {self.matmul_fp32_gflops:.0f} GFLOP/s, "
                f"matmul bf16 {self.matmul_bf16_gflops:.0f} GFLOP/s, "
                f"copy {self.copy_gbps:.1f} GB/s, "
                f"FFT fp32 {self.fft_gflops:.0f} GFLOP/s")


def matmul_gflops(dtype: torch.dtype, n: int = 2048, device: torch.device | str = "cpu") -> float:
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    seconds = median_time(lambda: a @ b, device=device, repeat=5)
    return 2 * n**3 / seconds / 1e9


def copy_gbps(n_bytes: int = 256 * 2**20, device: torch.device | str = "cpu") -> float:
    src = torch.empty(n_bytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    seconds = median_time(lambda: dst.copy_(src), device=device, repeat=7)
    return 2 * n_bytes / seconds / 1e9  # a copy reads and writes every byte


def real_fft_flops(n: int) -> float:
    """FFTW's convention for a real transform of length n (half a complex one's 5 n log2 n): the
    count of the FFT ceiling and of the FFT ops alike."""
    return 2.5 * n * math.log2(n)


def fft_gflops(rows: int = 256, n: int = 8192, device: torch.device | str = "cpu") -> float:
    """A bare rfft + irfft pair over contiguous rows."""
    x = torch.randn(rows, n, device=device)
    seconds = median_time(lambda: torch.fft.irfft(torch.fft.rfft(x), n=n), device=device,
                          repeat=7)
    return rows * 2 * real_fft_flops(n) / seconds / 1e9


def measure_ceilings(device: torch.device | str = "cpu") -> Ceilings:
    return Ceilings(matmul_gflops(torch.float32, device=device),
                    matmul_gflops(torch.bfloat16, device=device),
                    copy_gbps(device=device), fft_gflops(device=device))
