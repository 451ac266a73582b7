"""Fused CPU kernels written in C (one file per memory, next to this module), compiled on first
use by the machine's C compiler and called through ctypes.

Why C and not eager PyTorch: an element-wise chain such as the phasor memory's makes ~20
passes over [B, T, C] arrays in eager PyTorch, each bound by memory bandwidth, and torch's
vectorised sin / cos cost ~1.3 ns per element; a fused loop reads each input once and keeps the
scan state in registers. No torch headers are needed (plain C on float pointers), so a kernel
compiles in about a second, and is cached:

    $HOLOLM_KERNEL_CACHE or $XDG_CACHE_HOME/hololm/kernels or ~/.cache/hololm/kernels
    <name>-<sha256 of source, headers, compiler, flags and CPU>.so   (temp file, renamed)

The compiler is $CC, else `cc` or `gcc` on PATH; `-march=native` is tried first (the library
is built for the CPU it runs on, and the CPU is part of the cache key). Where no compiler works
the ops fall back to their PyTorch forms with one warning; `HOLOLM_NATIVE=0` (or `ENABLED =
False`, as the tests do) turns the kernels off.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch

ENABLED = os.environ.get("HOLOLM_NATIVE", "1") != "0"
SOURCE_DIR = Path(__file__).parent
# no -ffast-math: its reassociation would delete the compensated (Kahan) sums
BASE_FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd", "-shared",
              "-fPIC"]
MIN_PARALLEL_ELEMENTS = 2**18  # below this, splitting over threads costs more than it saves
# A kernel walks rows of its channel range; rows of 128 channels ran 2.4x slower per element
# than rows of 512 (the prefetcher), so a thread gets at least this many channels: on the 2-core
# VM, splitting C = 256 or 512 over 2 threads was 1.3x slower than one thread.
MIN_CHANNELS_PER_THREAD = 512

# The C signatures, by file and function: p a pointer, i an int64. Every entry point ends with
# its work buffer and (B, T, C, b0, b1, c0, c1), the arguments `run_split` appends.
_PHASOR_FORWARD = "ppppp iii pppppp iiiiiii"
_PHASOR_BACKWARD = "ppppp iii pppppppppp iiiiiii"
SIGNATURES = {
    "phasor": {"phasor_forward": _PHASOR_FORWARD, "phasor_forward_complex": _PHASOR_FORWARD,
               "phasor_backward": _PHASOR_BACKWARD, "phasor_backward_complex": _PHASOR_BACKWARD},
    "diagonal_scan": {"diagonal_scan_forward": "ppppp iiiiiii",
                      "diagonal_scan_backward": "pppppppp iiiiiii"},
    "matrix_memory": {"decay_mask_forward": "pppp ii p iiiiiii",
                      "decay_mask_backward": "ppppppp ii p iiiiiii"},
}


def cache_dir() -> Path:
    if os.environ.get("HOLOLM_KERNEL_CACHE"):
        return Path(os.environ["HOLOLM_KERNEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hololm" / "kernels"


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def _cpu_id() -> str:
    """What -march=native depends on: the CPU's feature flags where /proc tells them."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.machine() + platform.processor()


def _build(name: str) -> Path:
    """Compile `<name>.c` into the cache (if not there yet); raise RuntimeError on failure."""
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set CC, or install cc/gcc)")
    source = SOURCE_DIR / f"{name}.c"
    headers = [path.read_text() for path in sorted(SOURCE_DIR.glob("*.h"))]  # what it includes
    errors = []
    for flags in (["-march=native", *BASE_FLAGS], BASE_FLAGS):
        key = hashlib.sha256("\0".join([source.read_text(), *headers, cc, *flags,
                                         _cpu_id()]).encode())
        target = cache_dir() / f"{name}-{key.hexdigest()[:16]}.so"
        if target.exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        try:
            done = subprocess.run([cc, *flags, str(source), "-o", tmp], capture_output=True,
                                  text=True, timeout=120)
            if done.returncode == 0:
                os.replace(tmp, target)  # atomic: concurrent builders each rename a whole file
                return target
            errors.append(f"{' '.join(flags)}: {done.stderr.strip()[-500:]}")
        except (OSError, subprocess.TimeoutExpired) as err:
            errors.append(f"{' '.join(flags)}: {err}")
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    raise RuntimeError(f"compiling {source} with {cc} failed: " + " | ".join(errors))


@functools.cache
def _load(name: str) -> ctypes.CDLL | None:
    try:
        lib = ctypes.CDLL(str(_build(name)))
    except (RuntimeError, OSError) as err:
        warnings.warn(f"hololm: the fused CPU kernel '{name}' is unavailable ({err}); using the "
                      "PyTorch form, which gives the same results more slowly", stacklevel=3)
        return None
    kinds = {"p": ctypes.c_void_p, "i": ctypes.c_int64}
    for function, signature in SIGNATURES[name].items():
        entry = getattr(lib, function)
        entry.argtypes = [kinds[kind] for kind in signature.replace(" ", "")]
        entry.restype = None
    return lib


def library(name: str) -> ctypes.CDLL | None:
    """The compiled kernel library `name` (hololm/ops/kernels/<name>.c), or None where kernels
    are disabled or cannot be built."""
    return _load(name) if ENABLED else None


def status() -> str:
    """One line for benchmark reports: which fused kernels this process runs."""
    if not ENABLED:
        return "off (HOLOLM_NATIVE=0 or ENABLED=False): PyTorch forms"
    names = sorted(path.stem for path in SOURCE_DIR.glob("*.c"))
    built = [name for name in names if library(name) is not None]
    missing = [name for name in names if name not in built]
    line = "fused C on CPU: " + (", ".join(built) or "none")
    return line + (f"; unavailable (PyTorch forms): {', '.join(missing)}" if missing else "")


def pointer(x: torch.Tensor | None) -> int | None:
    """A contiguous float32 CPU tensor's data address for ctypes (None stays NULL). The caller
    must hold a reference to the tensor until the call returns."""
    return None if x is None else x.data_ptr()


@functools.cache
def _pool(pid: int):
    """One pool per process: a pool inherited through fork has no live threads."""
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(max_workers=os.cpu_count() or 1,
                              thread_name_prefix="hololm-kernel")


def _ranges(batch: int, channels: int, elements: int) -> list[tuple[int, int, int, int]]:
    """(b0, b1, c0, c1) for each call: one call for small work or one thread; else up to
    `torch.get_num_threads()` ranges of batch rows (rows stay whole: 1.7x on 2 threads at
    B = 8), or, for a single row, of whole 16-channel groups at least MIN_CHANNELS_PER_THREAD
    wide."""
    threads = torch.get_num_threads()
    if threads <= 1 or elements < MIN_PARALLEL_ELEMENTS:
        return [(0, batch, 0, channels)]
    if batch > 1:
        parts = min(threads, batch)
        bounds = [round(i * batch / parts) for i in range(parts + 1)]
        return [(b0, b1, 0, channels) for b0, b1 in zip(bounds[:-1], bounds[1:], strict=True)]
    parts = min(threads, channels // max(16, MIN_CHANNELS_PER_THREAD))
    if parts <= 1:
        return [(0, batch, 0, channels)]
    bounds = [16 * round(i * channels / parts / 16) for i in range(parts)] + [channels]
    return [(0, batch, c0, c1) for c0, c1 in zip(bounds[:-1], bounds[1:], strict=True)
            if c1 > c0]


def run_split(fn, args: tuple, state_rows: int, like: torch.Tensor, batch: int, steps: int,
              channels: int) -> None:
    """Call fn(*args, work, B, T, C, b0, b1, c0, c1) over the batch rows and channels, split
    over threads where that pays (`_ranges`); each call gets its own work buffer of
    [state_rows, C] floats. ctypes drops the GIL during a call, so the ranges run in parallel;
    every (row, channel) is computed by exactly one call, so the result does not depend on the
    split."""
    ranges = _ranges(batch, channels, batch * steps * channels)
    work = like.new_empty(len(ranges), state_rows, channels)
    calls = [(*args, pointer(work[i]), batch, steps, channels, *r) for i, r in enumerate(ranges)]
    if len(calls) == 1:
        fn(*calls[0])
        return
    for job in [_pool(os.getpid()).submit(fn, *call) for call in calls]:
        job.result()
