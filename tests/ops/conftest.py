"""Fixtures of the op tests."""

from __future__ import annotations

import pytest

from hololm.ops import triton_kernels


def pytest_generate_tests(metafunc):
    """A test that takes `backend` runs once per backend in its module's `BACKENDS`, the test id
    naming it (test_causality[cpu]); a test that names its own backends
    (`@pytest.mark.parametrize("backend", [...], indirect=True)`) runs on those."""
    own = any("backend" in mark.args[0]
              for mark in metafunc.definition.iter_markers("parametrize"))
    if "backend" in metafunc.fixturenames and not own:
        metafunc.parametrize("backend", metafunc.module.BACKENDS, indirect=True)


@pytest.fixture
def backend(request):
    """A backend of the module's op, skipped where it cannot run here: "cpu" where the
    module's C `KERNEL` does not build (no compiler), "triton" without triton or its
    interpreter (the op tests run Triton on CPU tensors)."""
    if request.param == "cpu" and request.module.KERNEL.library() is None:
        pytest.skip(f"the {request.module.KERNEL.name} kernel did not build here (no C compiler)")
    if request.param == "triton":
        if not triton_kernels.importable():
            pytest.skip("triton is not installed")
        if not triton_kernels.interpreted():
            pytest.skip("the op tests run Triton on CPU tensors: needs TRITON_INTERPRET=1 "
                        "(set by tests/conftest.py where there is no GPU)")
    return request.param
