"""Measurements for side-by-side benchmarks on a shared machine: interleaved median timings (every
candidate timed once per round, so a slow spell hits all of them alike), peak memory of one call
and resident memory, on CPU (Linux /proc) and CUDA.

CPU peak memory is the process's peak resident set (VmHWM) during the call minus its resident set
just before, after giving freed heap pages back to the OS (`malloc_trim`) and resetting the peak
(`/proc/self/clear_refs`). It counts every page the call touches (tensors, allocator slack), so it
is an upper bound of the tensor bytes; where /proc is missing it is NaN. CUDA peak memory is
`torch.cuda.max_memory_allocated` above what was allocated before the call.
"""

from __future__ import annotations

import ctypes
import gc
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def is_out_of_memory(err: BaseException) -> bool:
    """CUDA OOM, or a CPU allocation failure ("DefaultCPUAllocator: can't allocate memory")."""
    if isinstance(err, torch.OutOfMemoryError | MemoryError):
        return True
    return isinstance(err, RuntimeError) and "can't allocate memory" in str(err)


def release_memory(device: torch.device) -> None:
    """Collect garbage and hand cached memory back (CUDA cache, glibc free heap pages)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory for reuse (every block from the heap, no mmap,
    no trimming of the heap's top) instead of handing each large block back to the OS, where
    the next allocation of that size pays a page fault per 4 KB page: on the 2-core VM that
    doubled the time of element-wise ops on [8192, 512] tensors. Process-wide, so it applies to
    every candidate alike; False where malloc is not glibc's."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_top_pad, m_mmap_max = -1, -2, -4  # malloc.h
        return bool(libc.mallopt(m_mmap_max, 0)
                    and libc.mallopt(m_trim_threshold, 2**31 - 1)
                    and libc.mallopt(m_top_pad, 64 * 2**20))
    except (OSError, AttributeError):
        return False


def _status_bytes(field: str) -> float:
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1]) * 1024  # reported in kB
    except OSError:
        pass
    return math.nan


def resident_bytes() -> float:
    """The process's resident set size (NaN where /proc is missing)."""
    return _status_bytes("VmRSS")


def peak_memory_bytes(fn: Callable[[], object], device: torch.device) -> float:
    """Peak memory of `fn()` above the memory in use before it (see the module docstring)."""
    release_memory(device)
    if device.type == "cuda":
        _sync(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        _sync(device)
        return float(torch.cuda.max_memory_allocated(device) - before)
    try:
        CLEAR_REFS.write_text("5")  # reset the peak resident set to the current one
    except OSError:
        return math.nan
    before = resident_bytes()
    fn()
    return _status_bytes("VmHWM") - before


def interleaved_times(fns: dict[str, Callable[[], object]], *, device: torch.device,
                      repeat: int = 3, warmup: int = 1, budget_s: float = 60.0,
                      min_time_s: float = 0.0, max_repeat: int = 15) -> dict[str, float]:
    """Median seconds of each callable over `repeat` rounds, one call of each per round after
    `warmup` untimed rounds. A candidate whose timed calls have used up `budget_s` is not called
    again (it keeps at least one timed run). Cheap candidates get more rounds: rounds go on until
    they took `min_time_s` in all (at most `max_repeat`), so that a short spell of load from
    other processes does not decide a median of a few millisecond-long calls."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    start = time.perf_counter()
    for round_ in range(max(repeat, max_repeat)):
        if round_ >= repeat and time.perf_counter() - start >= min_time_s:
            break
        for name, fn in fns.items():
            if times[name] and sum(times[name]) > budget_s:
                continue
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}
