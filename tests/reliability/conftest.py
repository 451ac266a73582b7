import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Long or process-spawning attacks run on one torch thread (the CI machine has two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
