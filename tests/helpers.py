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


def by_backend(compute, backend: str) -> dict:
    """compute(backend, threads) on the PyTorch form ("torch") and on `backend`, keyed by name;
    for "cpu" in one call (threads=1) and with the work split two ways ("cpu split")."""
    runs = [("torch", "torch", None), (backend, backend, 1 if backend == "cpu" else None)]
    if backend == "cpu":
        runs.append(("cpu split", "cpu", 2))
    return {name: compute(form, threads) for name, form, threads in runs}
