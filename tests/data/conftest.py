import pytest

from hololm.data.hub import hub_reachable


@pytest.fixture
def offline(monkeypatch):
    """The hub is unreachable, as on a machine without network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_reachable.cache_clear()
    yield
    hub_reachable.cache_clear()


@pytest.fixture
def alpaca_rows() -> list[dict]:
    return [{"instruction": f"Add {i} and 1.", "input": "" if i % 2 else f"{i} 1",
             "output": f"{i + 1}"} for i in range(60)]
