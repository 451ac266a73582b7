import pytest

from tests.eval.helpers import save_step, tiny


@pytest.fixture
def checkpoint_dir(tmp_path):
    """A checkpoint directory holding step_2 of a tiny pure holographic model."""
    save_step(tmp_path / "checkpoints", tiny("holo", hybrid_ratio=0), 2)
    return tmp_path / "checkpoints"
