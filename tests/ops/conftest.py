"""Fixtures of the op tests."""

from __future__ import annotations

import pytest

from hololm.ops import kernels


@pytest.fixture(params=["native", "torch"])
def form(request, monkeypatch):
    """Run a test on both fast forms of the module's `KERNEL` op: the fused C kernel and the
    PyTorch one (a module opts in with `pytestmark = pytest.mark.usefixtures("form")`)."""
    native = request.param == "native"
    if native and kernels.library(request.module.KERNEL) is None:
        pytest.skip(f"the {request.module.KERNEL} kernel did not build here (no C compiler)")
    monkeypatch.setattr(kernels, "ENABLED", native)
    return request.param
