"""Comparison helpers for tests: relative RMS error ‖a−b‖/‖b‖, computed in float64."""

from __future__ import annotations

import torch


def rel_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    a = torch.view_as_real(a) if a.is_complex() else a
    b = torch.view_as_real(b) if b.is_complex() else b
    a, b = a.detach().double().cpu(), b.detach().double().cpu()  # either may be on a GPU
    if a.shape != b.shape:
        raise AssertionError(f"shape mismatch {tuple(a.shape)} vs {tuple(b.shape)}")
    denom = b.norm().item()
    num = (a - b).norm().item()
    return num / denom if denom > 0 else num


def assert_close(a: torch.Tensor, b: torch.Tensor, tol: float, what: str = "") -> None:
    """Relative-RMS closeness; `b` is the reference."""
    err = rel_rms(a, b)
    assert err <= tol, f"{what}: relative RMS error {err:.3e} > {tol:.1e}"


def by_kernel_form(compute, monkeypatch) -> dict:
    """compute() on the PyTorch form ("torch"), the fused C kernels ("native") and the kernels
    with the channels split over two threads ("native split"), keyed by form."""
    from hololm.ops import kernels

    monkeypatch.setattr(kernels, "MIN_PARALLEL_ELEMENTS", 0)
    monkeypatch.setattr(kernels, "MIN_CHANNELS_PER_THREAD", 16)
    results = {}
    for name, enabled, threads in (("torch", False, 1), ("native", True, 1),
                                   ("native split", True, 2)):
        monkeypatch.setattr(kernels, "ENABLED", enabled)
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            results[name] = compute()
        finally:
            torch.set_num_threads(before)
    return results
