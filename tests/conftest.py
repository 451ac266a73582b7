import os
from pathlib import Path

# Without a GPU the Triton kernels run on CPU tensors through Triton's interpreter
# (tests/ops/conftest.py), which must be switched on before anything imports triton (torch does)
if not any(Path("/dev").glob("nvidia[0-9]*")) and not Path("/dev/dxg").exists():  # dxg: WSL2
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
