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


def by_kernel_form(compute, monkeypatch, form: str = "native") -> dict:
    """compute() on the PyTorch form ("torch") and on a fast `form`: the fused C kernels
    ("native", and "native split" with the channels split over two threads) or the Triton
    kernel ("triton"), keyed by form."""
    from hololm.ops import kernels, triton_kernels

    monkeypatch.setattr(kernels, "MIN_PARALLEL_ELEMENTS", 0)
    monkeypatch.setattr(kernels, "MIN_CHANNELS_PER_THREAD", 16)
    runs = [("torch", False, False, 1)]
    if form == "triton":
        runs.append(("triton", False, True, 1))
    else:
        runs += [("native", True, False, 1), ("native split", True, False, 2)]
    results = {}
    for name, native, fused, threads in runs:
        monkeypatch.setattr(kernels, "ENABLED", native)
        monkeypatch.setattr(triton_kernels, "ENABLED", fused)
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            results[name] = compute()
        finally:
            torch.set_num_threads(before)
    return results
