"""Typed errors for problems a user can cause (a missing dataset, a broken checkpoint, a bad
config): each carries a one-line message naming the problem, so the CLI can print it without a
traceback."""

from __future__ import annotations


class HololmError(Exception):
    """Base of every error hololm raises on purpose."""


class DatasetUnavailableError(HololmError):
    """A dataset cannot be loaded: unknown name, missing files, bad format, or no network."""


class CheckpointError(HololmError):
    """A checkpoint is missing, partial or corrupt."""


class ConfigError(HololmError, ValueError):
    """A configuration value is invalid or inconsistent (a ValueError too, for callers that
    catch those)."""


class BackendUnavailableError(HololmError, ValueError):
    """An op was asked for a backend it does not have or that cannot run these inputs here
    (not compiled, no compiler, wrong device or dtype); the message names op, backend and why."""


class KernelBindingError(HololmError, TypeError):
    """A C kernel's Python binding disagrees with its C prototype (at load), or a call passes
    the wrong number or kind of arguments: raised instead of corrupting memory."""


class TrainingDivergedError(HololmError):
    """Training produced non-finite losses or gradients for too many consecutive steps."""


def is_out_of_memory(err: BaseException) -> bool:
    """Whether `err` is the machine running out of memory (CPU or GPU), which a user fixes
    with a smaller batch, not a bug; recognised without importing torch."""
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("can't allocate memory" in text
                                              or "CUDA out of memory" in text)
