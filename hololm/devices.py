"""The device a user names with --device, checked before anything is loaded onto it."""

from __future__ import annotations

import torch

from hololm.errors import ConfigError


def resolve_device(spec: str | torch.device) -> torch.device:
    """torch.device for `spec`; ConfigError when torch does not know the name or this machine
    has no such device (torch would fail later, deep inside a load, with a traceback)."""
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"device {spec!r} is not a torch device (cpu, cuda, cuda:1, mps, ...)"
                          ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ConfigError(f"device {spec!r}: no CUDA GPU is available here (torch "
                              f"{torch.__version__}, {build})")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {spec!r}: this machine has {torch.cuda.device_count()} "
                              f"CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {spec!r}: MPS is not available here")
    return device
