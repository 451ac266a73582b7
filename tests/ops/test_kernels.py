"""The fused-kernel loader: build once into the cache, atomically; without a compiler, one
warning and the PyTorch forms (same results)."""

from __future__ import annotations

import math
import shutil
import warnings

import pytest
import torch

from hololm.ops import kernels
from hololm.ops.phasor import generate_random_phasors, phasor_memory, phasor_memory_ref
from tests.helpers import assert_close


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty kernel cache, and no library loaded yet in this process."""
    monkeypatch.setenv("HOLOLM_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setattr(kernels, "ENABLED", True)
    kernels._load.cache_clear()
    yield tmp_path
    kernels._load.cache_clear()


def test_build_is_cached_and_leaves_no_temp_files(fresh_cache):
    if kernels._compiler() is None:
        pytest.skip("no C compiler on this machine")
    lib = kernels.library("phasor")
    assert lib is not None
    built = list(fresh_cache.iterdir())
    assert len(built) == 1 and built[0].name.startswith("phasor-") and built[0].suffix == ".so"
    stamp = built[0].stat().st_mtime_ns
    assert kernels._build("phasor") == built[0]  # found by its key, not compiled again
    assert built[0].stat().st_mtime_ns == stamp and list(fresh_cache.iterdir()) == built


def test_an_edited_header_is_a_new_build(fresh_cache, tmp_path, monkeypatch):
    """The cache key covers the headers a kernel includes, not just its own source."""
    if kernels._compiler() is None:
        pytest.skip("no C compiler on this machine")
    sources = tmp_path / "src"
    shutil.copytree(kernels.SOURCE_DIR, sources, ignore=shutil.ignore_patterns("*.py", "__*"))
    monkeypatch.setattr(kernels, "SOURCE_DIR", sources)
    first = kernels._build("diagonal_scan")
    header = sources / "exp_f32.h"
    header.write_text(header.read_text() + "/* edited */\n")
    second = kernels._build("diagonal_scan")
    assert second != first and first.exists() and second.exists()


def test_without_a_compiler_ops_fall_back_with_one_warning(fresh_cache, monkeypatch):
    monkeypatch.setenv("CC", str(fresh_cache / "no-such-cc"))
    with pytest.warns(UserWarning, match="fused CPU kernel 'phasor' is unavailable"):
        assert kernels.library("phasor") is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the failure is remembered: no second warning
        assert kernels.library("phasor") is None
        freqs = generate_random_phasors(32, seed=1)
        v = torch.randn(1, 20, 2, 16)
        phase = math.pi * torch.tanh(torch.randn(2, 1, 20, 2, 16))
        out, state = phasor_memory(v, phase[0], phase[1], freqs)
    out_ref, state_ref = phasor_memory_ref(v.double(), phase[0].double(), phase[1].double(), freqs)
    assert_close(out, out_ref, 1e-5, "fallback output")
    assert_close(state, state_ref, 1e-5, "fallback state")
    assert list(fresh_cache.iterdir()) == []  # the failed build left nothing behind


def test_disabled_kernels_are_never_built(fresh_cache, monkeypatch):
    monkeypatch.setattr(kernels, "ENABLED", False)
    assert kernels.library("phasor") is None
    assert list(fresh_cache.iterdir()) == []


def test_status_line_names_what_runs(fresh_cache, monkeypatch):
    monkeypatch.setattr(kernels, "ENABLED", False)
    assert kernels.status().startswith("off")
    monkeypatch.setattr(kernels, "ENABLED", True)
    monkeypatch.setenv("CC", str(fresh_cache / "no-such-cc"))
    with pytest.warns(UserWarning):
        line = kernels.status()
    assert line == ("fused C on CPU: none; unavailable (PyTorch forms): diagonal_scan, "
                    "matrix_memory, phasor")


def test_split_ranges(monkeypatch):
    monkeypatch.setattr(kernels, "MIN_PARALLEL_ELEMENTS", 1000)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert kernels._ranges(8, 512, 10**6) == [(0, 8, 0, 512)]
        torch.set_num_threads(2)
        assert kernels._ranges(8, 512, 999) == [(0, 8, 0, 512)]  # too little work
        assert kernels._ranges(8, 512, 10**6) == [(0, 4, 0, 512), (4, 8, 0, 512)]  # rows
        assert kernels._ranges(3, 512, 10**6) == [(0, 2, 0, 512), (2, 3, 0, 512)]
        assert kernels._ranges(1, 512, 10**6) == [(0, 1, 0, 512)]  # rows would get too short
        assert kernels._ranges(1, 1040, 10**6) == [(0, 1, 0, 512), (0, 1, 512, 1040)]
    finally:
        torch.set_num_threads(before)


def test_channel_split_of_one_row_is_bit_identical(monkeypatch):
    """A single batch row split over channel ranges gives exactly the one-call result (the
    batch split is covered by the ops' own native-vs-torch tests)."""
    if kernels.library("phasor") is None:
        pytest.skip("no C compiler on this machine")
    monkeypatch.setattr(kernels, "ENABLED", True)
    monkeypatch.setattr(kernels, "MIN_PARALLEL_ELEMENTS", 0)
    monkeypatch.setattr(kernels, "MIN_CHANNELS_PER_THREAD", 16)
    gen = torch.Generator().manual_seed(3)
    v = torch.randn(1, 50, 4, 16, generator=gen, requires_grad=True)
    phase = math.pi * torch.tanh(torch.randn(2, 1, 50, 4, 16, generator=gen))
    freqs = generate_random_phasors(64, seed=2)
    results = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            out, state = phasor_memory(v, phase[0], phase[1], freqs)
            grad, = torch.autograd.grad(torch.view_as_real(out).square().sum(), v)
            results.append((out, state, grad))
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(*results, strict=True))
