"""The fused-kernel loader: build once into the cache, atomically; without a compiler, one
warning and the PyTorch forms under "auto" (same results), a clear error under "cpu"; the
binding checked against the C prototypes at load and on every call."""

from __future__ import annotations

import math
import shutil
import warnings

import pytest
import torch

from hololm.errors import BackendUnavailableError, KernelBindingError
from hololm.ops import kernels
from hololm.ops.diagonal_scan import cpu_form as scan_cpu
from hololm.ops.phasor import generate_random_phasors, phasor_memory, phasor_memory_ref
from hololm.ops.phasor.cpu_form import KERNEL
from tests.helpers import assert_close


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty kernel cache, and no library loaded yet in this process."""
    monkeypatch.setenv("HOLOLM_KERNEL_CACHE", str(tmp_path))
    for kernel in kernels.KERNELS:
        kernel.clear()
    yield tmp_path
    for kernel in kernels.KERNELS:
        kernel.clear()


def test_build_is_cached_and_leaves_no_temp_files(fresh_cache):
    if kernels._compiler() is None:
        pytest.skip("no C compiler on this machine")
    assert KERNEL.library() is not None
    built = list(fresh_cache.iterdir())
    assert len(built) == 1 and built[0].name.startswith("phasor-") and built[0].suffix == ".so"
    stamp = built[0].stat().st_mtime_ns
    assert kernels._build(KERNEL.source) == built[0]  # found by its key, not compiled again
    assert built[0].stat().st_mtime_ns == stamp and list(fresh_cache.iterdir()) == built


def test_an_edited_header_is_a_new_build(fresh_cache, tmp_path, monkeypatch):
    """The cache key covers the headers a kernel includes, not just its own source."""
    if kernels._compiler() is None:
        pytest.skip("no C compiler on this machine")
    headers = tmp_path / "headers"
    shutil.copytree(kernels.HEADER_DIR, headers, ignore=shutil.ignore_patterns("*.py", "__*"))
    first = kernels._build(scan_cpu.KERNEL.source, headers)
    header = headers / "exp_f32.h"
    header.write_text(header.read_text() + "/* edited */\n")
    second = kernels._build(scan_cpu.KERNEL.source, headers)
    assert second != first and first.exists() and second.exists()


def test_without_a_compiler_ops_fall_back_with_one_warning(fresh_cache, monkeypatch):
    monkeypatch.setenv("CC", str(fresh_cache / "no-such-cc"))
    with pytest.warns(UserWarning, match="fused CPU kernel 'phasor' is unavailable"):
        assert KERNEL.library() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the failure is remembered: no second warning
        assert KERNEL.library() is None
        freqs = generate_random_phasors(32, seed=1)
        v = torch.randn(1, 20, 2, 16)
        phase = math.pi * torch.tanh(torch.randn(2, 1, 20, 2, 16))
        out, state = phasor_memory(v, phase[0], phase[1], freqs)
    out_ref, state_ref = phasor_memory_ref(v.double(), phase[0].double(), phase[1].double(), freqs)
    assert_close(out, out_ref, 1e-5, "fallback output")
    assert_close(state, state_ref, 1e-5, "fallback state")
    assert list(fresh_cache.iterdir()) == []  # the failed build left nothing behind
    with pytest.raises(BackendUnavailableError, match="phasor_memory: backend 'cpu' is "
                       "unavailable: the C kernel is not compiled .*no-such-cc"):
        phasor_memory(v, phase[0], phase[1], freqs, backend="cpu")


def test_disabled_kernels_are_never_built(fresh_cache, monkeypatch):
    monkeypatch.setenv("HOLOLM_NATIVE", "0")
    phasor_memory(torch.randn(1, 3, 2, 4), torch.zeros(1, 3, 2, 4), torch.zeros(1, 3, 2, 4))
    assert list(fresh_cache.iterdir()) == []


def test_status_line_names_what_runs(fresh_cache, monkeypatch):
    monkeypatch.setenv("HOLOLM_NATIVE", "0")
    assert kernels.status().startswith("off")
    monkeypatch.delenv("HOLOLM_NATIVE")
    monkeypatch.setenv("CC", str(fresh_cache / "no-such-cc"))
    with pytest.warns(UserWarning):
        line = kernels.status()
    assert line == ("fused C on CPU: none; unavailable (PyTorch forms): diagonal_scan, "
                    "matrix_memory, phasor")


def test_split_ranges():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert kernels._ranges(8, 512, 10**6, 1) == [(0, 8, 0, 512)]
        assert kernels._ranges(8, 512, 999) == [(0, 8, 0, 512)]  # too little work
        assert kernels._ranges(8, 512, 10**6) == [(0, 4, 0, 512), (4, 8, 0, 512)]  # rows
        assert kernels._ranges(3, 512, 10**6) == [(0, 2, 0, 512), (2, 3, 0, 512)]
        assert kernels._ranges(1, 512, 10**6) == [(0, 1, 0, 512)]  # rows would get too short
        assert kernels._ranges(1, 1040, 10**6) == [(0, 1, 0, 512), (0, 1, 512, 1040)]
        assert kernels._ranges(8, 512, 999, 2) == [(0, 4, 0, 512), (4, 8, 0, 512)]  # as told
        assert kernels._ranges(1, 64, 999, 2) == [(0, 1, 0, 32), (0, 1, 32, 64)]
    finally:
        torch.set_num_threads(before)


def test_channel_split_of_one_row_is_bit_identical():
    """A single batch row split over channel ranges gives exactly the one-call result (the
    batch split is covered by the ops' own cpu-vs-torch tests)."""
    if KERNEL.library() is None:
        pytest.skip("no C compiler on this machine")
    gen = torch.Generator().manual_seed(3)
    v = torch.randn(1, 50, 4, 16, generator=gen, requires_grad=True)
    phase = math.pi * torch.tanh(torch.randn(2, 1, 50, 4, 16, generator=gen))
    freqs = generate_random_phasors(64, seed=2)
    results = []
    for threads in (1, 2):
        out, state = phasor_memory(v, phase[0], phase[1], freqs, backend="cpu", threads=threads)
        grad, = torch.autograd.grad(torch.view_as_real(out).square().sum(), v)
        results.append((out, state, grad))
    assert all(torch.equal(a, b) for a, b in zip(*results, strict=True))


SOURCE = """
#include <stdint.h>
#define ARGS const float *x, double *y, int64_t n
/* a comment: void not_a_function(float *z) { */
static inline void helper(float *z) { }
void add(ARGS, float *work, int64_t B, int64_t T, int64_t C, int64_t b0, int64_t b1,
         int64_t c0, int64_t c1) { }
"""


def test_prototypes_are_parsed_from_the_source():
    assert kernels.prototypes(SOURCE) == {"add": [
        ("x", "f"), ("y", "d"), ("n", "i"), ("work", "f"), *[(n, "i") for n in "BTC"],
        ("b0", "i"), ("b1", "i"), ("c0", "i"), ("c1", "i")]}


@pytest.mark.parametrize("declared, match", [
    ("x:f y:d", "declared 10 parameters .* C has 11"),  # a missing argument
    ("x:f y:d n:i m:i", "declared 12 parameters"),  # one too many
    ("x:f y:f n:i", "y:f"),  # a double pointer bound as float
    ("x:f y:d n:f", "n:f"),  # an int64_t bound as a pointer
    ("y:d x:f n:i", "y:d x:f"),  # swapped
])
def test_a_wrong_binding_raises_at_load(tmp_path, declared, match):
    source = tmp_path / "add.c"
    source.write_text(SOURCE)
    for functions, error in (({"add": declared}, match), ({"sub": "x:f"}, "has no function sub")):
        kernel = kernels.Kernel(source, functions)
        kernels.KERNELS.remove(kernel)  # not one of hololm's kernels
        with pytest.raises(KernelBindingError, match=error):
            kernel.load()


def test_every_op_binding_matches_its_source():
    for kernel in kernels.KERNELS:
        kernel.check_declaration()


def test_a_wrong_call_raises_before_reaching_c():
    if scan_cpu.KERNEL.library() is None:
        pytest.skip("no C compiler on this machine")
    forward = scan_cpu.KERNEL.load()["diagonal_scan_forward"]
    x, h0 = torch.zeros(1, 4, 8), torch.zeros(1, 8)
    reset = torch.zeros(1, 4, dtype=torch.bool)
    good = (x, x, h0, reset, torch.empty_like(x), torch.empty(1, 8), 1, 4, 8, 0, 1, 0, 8)
    forward(*good)
    forward(*good[:3], None, *good[4:])  # reset is a pointer C accepts as NULL
    cases = [
        (good[:-1], "takes 13 arguments, got 12"),
        ((*good[:6], x, *good[7:]), "B must be an int .* got Tensor"),
        ((*good[:6], True, *good[7:]), "B must be an int .* got bool"),
        ((*good[:3], reset.to(torch.uint8), *good[4:]), "reset must be a contiguous torch.bool "
                                                         "CPU tensor, got torch.uint8"),
        ((x.double(), *good[1:]), "x must be a contiguous torch.float32 CPU tensor, got "
                                  "torch.float64"),
        ((x.transpose(1, 2), *good[1:]), "contiguous=False"),
        ((x.to("meta"), *good[1:]), "on meta"),
        ((None, *good[1:]), "x must be .* got NoneType"),
    ]
    for args, match in cases:
        with pytest.raises(KernelBindingError, match=match):
            forward(*args)
