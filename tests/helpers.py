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


def run(fn, inputs: dict, dtype: torch.dtype = torch.float32, **kwargs):
    """A memory op `fn` on leaf copies of `inputs` cast to `dtype` (the state stays float32
    unless dtype is float64); back-propagates fixed random cotangents of y and the final state.
    Returns (y, final state, {name: gradient})."""
    leaves = {}
    for name, x in inputs.items():
        if x is not None:
            wide = dtype == torch.float64 or name != "initial_state"
            x = x.to(dtype if wide else torch.float32).detach().requires_grad_()
        leaves[name] = x
    y, S = fn(**leaves, **kwargs)
    gen = torch.Generator().manual_seed(1)
    gy = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    gS = torch.randn(S.shape, generator=gen, dtype=torch.float64)
    ((y.double() * gy).sum() + (S.double() * gS).sum()).backward()
    return y.detach(), S.detach(), {n: x.grad for n, x in leaves.items() if x is not None}


def assert_same(got, ref, tol: float, grad_tol: float | None = None) -> None:
    """`run` results `got` against `ref`: y, final state and every gradient."""
    y, S, grads = got
    y_ref, S_ref, grads_ref = ref
    assert_close(y, y_ref, tol, "y")
    assert_close(S, S_ref, tol, "final state")
    assert grads.keys() == grads_ref.keys()
    for name in grads:
        assert torch.isfinite(grads[name]).all(), f"grad {name} not finite"
        assert_close(grads[name], grads_ref[name], grad_tol or tol, f"grad {name}")
