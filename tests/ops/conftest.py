"""Fixtures of the op tests."""

from __future__ import annotations

import os

import pytest

from hololm.ops import kernels, triton_kernels


def pytest_generate_tests(metafunc):
    """A module's tests run once per form in its `KERNEL_FORMS` (default: C kernel, PyTorch)."""
    if "form" in metafunc.fixturenames:
        forms = getattr(metafunc.module, "KERNEL_FORMS", ("native", "torch"))
        metafunc.parametrize("form", forms, indirect=True)


@pytest.fixture
def form(request, monkeypatch):
    """Run a test on one fast form of the module's `KERNEL` op: "native" (the fused C kernel),
    "torch" (the PyTorch form) or "triton" (the Triton kernel; on CPU through the interpreter).
    A module opts in with `pytestmark = pytest.mark.usefixtures("form")`."""
    native = request.param == "native"
    if native and kernels.library(request.module.KERNEL) is None:
        pytest.skip(f"the {request.module.KERNEL} kernel did not build here (no C compiler)")
    if request.param == "triton":
        if not triton_kernels.importable():
            pytest.skip("triton is not installed")
        if os.environ.get("TRITON_INTERPRET") != "1":
            pytest.skip("the op tests run Triton on CPU tensors: needs TRITON_INTERPRET=1 "
                        "(set by tests/conftest.py where there is no GPU)")
        monkeypatch.setattr(triton_kernels, "ON_CPU", True)
    monkeypatch.setattr(kernels, "ENABLED", native)
    monkeypatch.setattr(triton_kernels, "ENABLED", request.param == "triton")
    return request.param
