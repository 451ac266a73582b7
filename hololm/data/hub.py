"""Is the Hugging Face hub reachable? Checked once with a short socket probe, so that an offline
machine gets a clear error in a second instead of minutes of download retries."""

from __future__ import annotations

import functools
import os
import socket

HUB_HOST = "huggingface.co"


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False
