"""One run per output directory: two trainers writing the same checkpoints, log.csv and samples
would corrupt them without a word. The run holds an advisory lock (`flock`) on
`<dir>/.hololm.lock` while it trains; the kernel drops it when the process dies however it dies,
so a crashed or killed run never leaves a lock behind that blocks the next one."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from hololm.errors import ConfigError

LOCK_FILE = ".hololm.lock"

try:
    import fcntl
except ImportError:  # Windows: no flock; the directory goes unlocked
    fcntl = None


class RunLock:
    """Context manager: the lock on `directory` (created if missing), or ConfigError naming the
    process that holds it."""

    def __init__(self, directory: str | Path):
        self.path = Path(directory) / LOCK_FILE
        self.handle = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 (held until __exit__)
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                owner = handle.read().strip() or "another process"
                handle.close()
                raise ConfigError(f"{self.path.parent} is in use by another training run "
                                  f"({owner}); choose another --output_dir / --checkpoint_dir, "
                                  f"or wait for that run to end") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        self.handle = handle
        return self

    def __exit__(self, *exc) -> None:
        if self.handle is not None:
            self.handle.close()  # closing the file releases the flock
            self.handle = None
