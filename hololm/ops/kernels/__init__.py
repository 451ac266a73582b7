"""Fused CPU kernels written in C (each next to its op, hololm/ops/<op>/<op>.c, sharing the
headers in this folder), compiled on first use by the machine's C compiler and called through
ctypes behind a checked binding.

Why C and not eager PyTorch: an element-wise chain such as the phasor memory's makes ~20
passes over [B, T, C] arrays in eager PyTorch, each bound by memory bandwidth, and torch's
vectorised sin / cos cost ~1.3 ns per element; a fused loop reads each input once and keeps the
scan state in registers. No torch headers are needed (plain C on float pointers), so a kernel
compiles in about a second, and is cached:

    $HOLOLM_KERNEL_CACHE or $XDG_CACHE_HOME/hololm/kernels or ~/.cache/hololm/kernels
    <name>-<sha256 of source, headers, compiler, flags and CPU>.so   (temp file, renamed)

The compiler is $CC, else `cc` or `gcc` on PATH; `-march=native` is tried first (the library
is built for the CPU it runs on, and the CPU is part of the cache key). Where no compiler works
the ops' "auto" backend falls back to the PyTorch forms with one warning and `backend="cpu"`
raises; `HOLOLM_NATIVE=0` keeps "auto" off the kernels.

The binding: ctypes passes whatever it is given, so a call that disagrees with the C prototype
corrupts memory silently. Each op declares the parameters it passes (`Kernel`); they are
compared with the prototypes parsed from the C source when the library loads, and every call
is checked against them (count; a contiguous CPU tensor of the pointer's dtype; an int for an
int64_t) before any address reaches C.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import re
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch

from hololm.errors import KernelBindingError

HEADER_DIR = Path(__file__).parent
# no -ffast-math: its reassociation would delete the compensated (Kahan) sums
BASE_FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd", "-shared",
              "-fPIC"]
MIN_PARALLEL_ELEMENTS = 2**18  # below this, splitting over threads costs more than it saves
# A kernel walks rows of its channel range; rows of 128 channels ran 2.4x slower per element
# than rows of 512 (the prefetcher), so a thread gets at least this many channels: on the 2-core
# VM, splitting C = 256 or 512 over 2 threads was 1.3x slower than one thread.
MIN_CHANNELS_PER_THREAD = 512
SPLIT_PARAMS = "work:f B:i T:i C:i b0:i b1:i c0:i c1:i"  # what `run_split` appends to a call
# a bool tensor is one byte per element, 0 or 1: a uint8_t pointer in C
C_KINDS = {"float*": "f", "double*": "d", "uint8_t*": "b", "int64_t": "i"}
POINTER_DTYPES = {"f": torch.float32, "d": torch.float64, "b": torch.bool}
KERNELS: list[Kernel] = []  # every declared kernel, for `status`


def enabled() -> bool:
    """Whether the "auto" backends may pick the C kernels (`HOLOLM_NATIVE=0`: never)."""
    return os.environ.get("HOLOLM_NATIVE", "1") != "0"


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


def _build(source: Path, header_dir: Path = HEADER_DIR) -> Path:
    """Compile `source` into the cache (if not there yet); raise RuntimeError on failure."""
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set CC, or install cc/gcc)")
    headers = [path.read_text() for path in sorted(header_dir.glob("*.h"))]  # what it includes
    errors = []
    for flags in (["-march=native", *BASE_FLAGS], BASE_FLAGS):
        flags = [*flags, f"-I{header_dir}"]
        key = hashlib.sha256("\0".join([source.read_text(), *headers, cc, *flags[:-1],
                                         _cpu_id()]).encode())
        target = cache_dir() / f"{source.stem}-{key.hexdigest()[:16]}.so"
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


def prototypes(source: str) -> dict[str, list[tuple[str, str]]]:
    """The exported (non-static) void functions of a C source: name → [(parameter, kind)],
    kind "f" / "d" / "b" (float / double / uint8_t pointer) or "i" (int64_t). Comments are
    dropped and object-like macros expanded first (the phasor kernels share their parameter
    lists)."""
    text = re.sub(r"/\*.*?\*/|//[^\n]*", " ", source, flags=re.S).replace("\\\n", " ")
    macros = dict(re.findall(r"^#define\s+(\w+)\s+(.*)$", text, flags=re.M))
    text = re.sub(r"^#.*$", " ", text, flags=re.M)
    text = re.sub(r"\b\w+\b", lambda m: macros.get(m.group(), m.group()), text)
    found = {}
    for name, params in re.findall(r"^void\s+(\w+)\s*\(([^)]*)\)\s*\{", text, flags=re.M):
        found[name] = []
        for param in params.split(","):
            match = re.fullmatch(r"\s*(?:const\s+)?(\w+)\s*(\*?)\s*(\w+)\s*", param)
            kind = C_KINDS.get(match.group(1) + match.group(2)) if match else None
            if kind is None:
                raise KernelBindingError(f"{name}: parameter {param.strip()!r} has a type the "
                                         f"binding does not handle ({', '.join(C_KINDS)})")
            found[name].append((match.group(3), kind))
    return found


class Function:
    """One C entry point and its declared parameters [(name, kind, may be None)]: `check`
    turns a call's arguments into ctypes values or raises KernelBindingError naming the
    parameter."""

    def __init__(self, name: str, entry, params: list[tuple[str, str, bool]]):
        self.name, self.entry, self.params = name, entry, params
        entry.argtypes = [ctypes.c_int64 if kind == "i" else ctypes.c_void_p
                          for _, kind, _ in params]
        entry.restype = None

    def check(self, args: tuple) -> tuple:
        if len(args) != len(self.params):
            raise KernelBindingError(f"{self.name} takes {len(self.params)} arguments, got "
                                     f"{len(args)}")
        out = []
        for (param, kind, nullable), arg in zip(self.params, args, strict=True):
            if kind == "i":
                if isinstance(arg, bool) or not isinstance(arg, int):
                    raise KernelBindingError(f"{self.name}: {param} must be an int (int64_t), "
                                             f"got {type(arg).__name__}")
                out.append(arg)
            elif arg is None and nullable:
                out.append(None)
            elif (isinstance(arg, torch.Tensor) and arg.dtype == POINTER_DTYPES[kind]
                  and arg.device.type == "cpu" and arg.is_contiguous()):
                out.append(arg.data_ptr())
            else:
                got = (f"{arg.dtype} on {arg.device}, contiguous={arg.is_contiguous()}"
                       if isinstance(arg, torch.Tensor) else type(arg).__name__)
                raise KernelBindingError(f"{self.name}: {param} must be a contiguous "
                                         f"{POINTER_DTYPES[kind]} CPU tensor, got {got}")
        return tuple(out)

    def __call__(self, *args) -> None:
        """A checked call; the caller holds the tensors until it returns."""
        self.entry(*self.check(args))


class Kernel:
    """A C source next to its op and the parameters the op passes to each of its functions,
    as "name:kind" with kind f (float32 tensor), d (float64 tensor), b (bool tensor) or i
    (int), and a trailing ? on a pointer that C accepts as NULL (None); `SPLIT_PARAMS` follow
    (`run_split`)."""

    def __init__(self, source: Path, functions: dict[str, str]):
        self.source, self.name = Path(source), Path(source).stem
        self.functions = {
            name: [(n, k.rstrip("?"), k.endswith("?"))
                   for n, _, k in (t.partition(":") for t in f"{p} {SPLIT_PARAMS}".split())]
            for name, p in functions.items()}
        KERNELS.append(self)

    def check_declaration(self) -> None:
        """KernelBindingError on any difference between the declared parameters and the C
        prototypes: a missing function, the count, a name or a kind."""
        found = prototypes(self.source.read_text())
        for function, params in self.functions.items():
            declared = [(name, kind) for name, kind, _ in params]
            if function not in found:
                raise KernelBindingError(f"{self.source.name} has no function {function}")
            if found[function] != declared:
                raise KernelBindingError(
                    f"the binding of {function} disagrees with {self.source.name}: declared "
                    f"{_show(declared)}, C has {_show(found[function])}")

    @functools.cache  # noqa: B019 (kernels live as long as the process)
    def load(self) -> dict[str, Function]:
        """Check the binding, build (cached) and load: RuntimeError / OSError when the library
        cannot be built or loaded, KernelBindingError when the binding is wrong."""
        self.check_declaration()
        lib = ctypes.CDLL(str(_build(self.source)))
        return {name: Function(name, getattr(lib, name), params)
                for name, params in self.functions.items()}

    @functools.cache  # noqa: B019
    def library(self) -> dict[str, Function] | None:
        """`load`, or None with one warning where the library cannot be built (the "auto"
        backends then run the PyTorch forms); a wrong binding is never hidden."""
        try:
            return self.load()
        except (RuntimeError, OSError) as err:
            warnings.warn(f"hololm: the fused CPU kernel '{self.name}' is unavailable ({err}); "
                          "using the PyTorch form, which gives the same results more slowly",
                          stacklevel=3)
            return None

    def clear(self) -> None:
        """Forget a loaded or failed library (tests that swap the compiler or cache)."""
        type(self).load.cache_clear()
        type(self).library.cache_clear()


def _show(params: list[tuple[str, str]]) -> str:
    return f"{len(params)} parameters ({' '.join(f'{n}:{k}' for n, k in params)})"


def status() -> str:
    """One line for benchmark reports: which fused kernels the "auto" backends run."""
    import hololm.ops  # noqa: F401 (declares every kernel)

    if not enabled():
        return "off (HOLOLM_NATIVE=0): PyTorch forms"
    names = sorted(kernel.name for kernel in KERNELS)
    built = sorted(kernel.name for kernel in KERNELS if kernel.library() is not None)
    missing = [name for name in names if name not in built]
    line = "fused C on CPU: " + (", ".join(built) or "none")
    return line + (f"; unavailable (PyTorch forms): {', '.join(missing)}" if missing else "")


@functools.cache
def _pool(pid: int):
    """One pool per process: a pool inherited through fork has no live threads."""
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(max_workers=os.cpu_count() or 1,
                              thread_name_prefix="hololm-kernel")


def _ranges(batch: int, channels: int, elements: int, threads: int | None = None
            ) -> list[tuple[int, int, int, int]]:
    """(b0, b1, c0, c1) for each call. `threads` None: one call for small work or one thread,
    else up to `torch.get_num_threads()` ranges of batch rows (rows stay whole: 1.7x on 2
    threads at B = 8), or, for a single row, of whole 16-channel groups at least
    MIN_CHANNELS_PER_THREAD wide. A given `threads` splits any work that many ways, a single
    row into groups of at least 16 channels (how tests check that the split changes nothing)."""
    min_channels = MIN_CHANNELS_PER_THREAD if threads is None else 16
    if threads is None:
        threads = torch.get_num_threads() if elements >= MIN_PARALLEL_ELEMENTS else 1
    if threads <= 1:
        return [(0, batch, 0, channels)]
    if batch > 1:
        parts = min(threads, batch)
        bounds = [round(i * batch / parts) for i in range(parts + 1)]
        return [(b0, b1, 0, channels) for b0, b1 in zip(bounds[:-1], bounds[1:], strict=True)]
    parts = min(threads, channels // min_channels)
    if parts <= 1:
        return [(0, batch, 0, channels)]
    bounds = [16 * round(i * channels / parts / 16) for i in range(parts)] + [channels]
    return [(0, batch, c0, c1) for c0, c1 in zip(bounds[:-1], bounds[1:], strict=True)
            if c1 > c0]


def run_split(fn: Function, args: tuple, state_rows: int, like: torch.Tensor, batch: int,
              steps: int, channels: int, threads: int | None = None) -> None:
    """Call fn(*args, work, B, T, C, b0, b1, c0, c1) over the batch rows and channels, split
    over threads where that pays (`_ranges`); each call gets its own work buffer of
    [state_rows, C] floats, and every call is checked before the first runs. ctypes drops the
    GIL during a call, so the ranges run in parallel; every (row, channel) is computed by
    exactly one call, so the result does not depend on the split."""
    ranges = _ranges(batch, channels, batch * steps * channels, threads)
    work = like.new_empty(len(ranges), state_rows, channels)
    calls = [fn.check((*args, work[i], batch, steps, channels, *r))
             for i, r in enumerate(ranges)]
    if len(calls) == 1:
        fn.entry(*calls[0])
        return
    for job in [_pool(os.getpid()).submit(fn.entry, *call) for call in calls]:
        job.result()
