import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Long or process-spawning attacks run on one torch thread (the CI machine has two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> str:
    """One token cache per module: the corpus is tokenized once."""
    return str(tmp_path_factory.mktemp("token-cache"))
