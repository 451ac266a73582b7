"""hololm's Triton kernels compile for a Hopper GPU (sm_90) without a GPU, with Triton's own
compiler, as the launches configure them, and none spills registers to the stack. The op tests
run the same kernels through Triton's interpreter, which checks their arithmetic but not that
they compile: a construct the compiler rejects, or a kernel too large for the registers, shows
here first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hololm.ops import triton_kernels

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not triton_kernels.importable(), reason="triton is not installed")
def test_kernels_compile_for_hopper_without_spilling(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(TRITON_CACHE_DIR=str(tmp_path), TRITON_DEFAULT_FP_FUSION="1")
    done = subprocess.run([sys.executable, "-m", "tests.ops.triton_compile", "90"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    kernels = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(kernels) == 26
    spilled = [k for k in kernels if k["stack"] > 0]
    assert not spilled, f"kernels that spill registers to the stack: {spilled}"
