"""Training checkpoints: atomic on disk, validated on load, enough to resume a run exactly.

Layout of `<checkpoint_dir>/step_<N>/`:

    model.safetensors, config.json, generation_config.json   model.save_pretrained
    tokenizer.json, tokenizer_config.json, ...                tokenizer.save_pretrained
    optimizer.pt, scheduler.pt                                torch.save of the state_dicts
    carried_states.safetensors (--carry_state runs only)      each process's memory states carried
                                                              into the next window
    trainer_state.json                                        step, loss history, sampler state,
                                                              RNG states (one per process), the
                                                              TrainConfig, SHA-256 of the files

model.safetensors also carries the SHA-256 of its own tensor bytes in its header's metadata
(`hololm.sha256`, next to `hololm.format`), so the weights stay verifiable when
trainer_state.json is lost: weights with either key are trainer-written and must match; weights
with neither are a plain `save_pretrained`, which records no checksums.

Everything is written into `<checkpoint_dir>/.tmp-step_<N>-<pid>/`, flushed to disk, and then
renamed to `step_<N>` with `os.replace`, so a run killed while saving leaves the previous
checkpoints untouched and only a temp directory, which `latest_checkpoint` never returns (the
next save deletes it). A write that fails (disk full, quota, I/O error) removes the temp
directory and raises `CheckpointError`, again leaving the earlier checkpoints as they were.
Old checkpoints are renamed away before they are deleted, so a kill while pruning never leaves
a half-deleted `step_<N>`.
`load_checkpoint` checks the files against their recorded checksums and reads the tensors with
safetensors and `torch.load(weights_only=True)` (no pickled code runs); any problem raises
`CheckpointError` with one line. Pruning skips a symlinked `step_<N>`: it is the user's.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import json
import os
import random
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from hololm.errors import CheckpointError

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
STATE_FILE = "trainer_state.json"
CARRIED_FILE = "carried_states.safetensors"
CHECKSUMMED = (MODEL_FILE, "config.json", OPTIMIZER_FILE, SCHEDULER_FILE)
STEP_DIR = re.compile(r"step_(\d+)")
LEFTOVER = re.compile(r"\.(?:tmp|old)-step_\d+-(\d+)")
FORMAT_VERSION = 2  # 2: model.safetensors carries its own checksum
WEIGHTS_FORMAT = "hololm.format"  # safetensors metadata keys written by save_checkpoint
WEIGHTS_SHA256 = "hololm.sha256"
MAX_HEADER = 100_000_000  # bytes; safetensors refuses larger headers too
CHUNK = 1 << 22


@dataclass
class Checkpoint:
    """A loaded checkpoint (tensors on CPU)."""

    path: Path
    step: int
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any]
    scheduler_state: dict[str, Any]
    sampler_state: Any
    rng_states: list[dict[str, Any]]  # index = process rank at save time
    history: list[dict[str, Any]]
    train_config: dict[str, Any]
    carried_states: dict[str, torch.Tensor] | None = None  # a --carry_state run's

    def load_model_state(self, model: nn.Module) -> None:
        """Copy the weights into `model`; a tied weight saved once (the head sharing the
        embedding) is not missing. Any other missing or unexpected key is an error."""
        missing, unexpected = model.load_state_dict(self.model_state, strict=False)
        params = model.state_dict()
        loaded = {params[name].data_ptr() for name in self.model_state if name in params}
        missing = [name for name in missing if params[name].data_ptr() not in loaded]
        if missing or unexpected:
            raise CheckpointError(f"checkpoint {self.path} does not fit the model: missing "
                                  f"{missing[:5]}, unexpected {unexpected[:5]}")


def capture_rng_state() -> dict[str, Any]:
    """This process's python, numpy, torch (and CUDA) generator states, JSON-ready."""
    version, internal, gauss = random.getstate()
    key, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [key, _b64(keys.tobytes()), pos, has_gauss, cached],
        "torch": _b64(torch.get_rng_state().numpy().tobytes()),
    }
    if torch.cuda.is_available():
        state["cuda"] = [_b64(s.numpy().tobytes()) for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of `capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    key, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((key, np.frombuffer(_unb64(keys), dtype=np.uint32), pos, has_gauss,
                         cached))
    torch.set_rng_state(_bytes_tensor(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_bytes_tensor(s) for s in state["cuda"]])


def save_checkpoint(checkpoint_dir: str | Path, model: PreTrainedModel,
                    tokenizer: PreTrainedTokenizerBase, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, sampler_state: Any,
                    step: int, train_config: dict[str, Any], *,
                    history: list[dict[str, Any]] | None = None,
                    rng_states: list[dict[str, Any]] | None = None,
                    carried_states: dict[str, torch.Tensor] | None = None,
                    keep: int | None = None) -> Path:
    """Write `<checkpoint_dir>/step_<step>` atomically and return its path. `model` is the
    unwrapped model; `rng_states` defaults to this process's; `carried_states` (named tensors)
    are a --carry_state run's memories; with `keep`, only the newest `keep` checkpoints up to
    this step remain (later ones, from an abandoned run, are left)."""
    checkpoint_dir = Path(checkpoint_dir)
    final = checkpoint_dir / f"step_{step}"
    tmp = checkpoint_dir / f".tmp-step_{step}-{os.getpid()}"
    if final.is_symlink():  # the user's link: never replaced, followed or deleted
        raise CheckpointError(f"cannot save checkpoint {final}: it is a symbolic link (to "
                              f"{os.readlink(final)}); move it away or use another "
                              f"--checkpoint_dir")
    try:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(checkpoint_dir)
        tmp.mkdir()
        with no_hf_progress_bars():
            model.save_pretrained(tmp, max_shard_size="1000GB")  # one file: model.safetensors
        _embed_checksum(tmp / MODEL_FILE)
        tokenizer.save_pretrained(tmp)
        torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
        torch.save(scheduler.state_dict(), tmp / SCHEDULER_FILE)
        names = CHECKSUMMED
        if carried_states is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in carried_states.items()},
                      str(tmp / CARRIED_FILE))
            names = (*names, CARRIED_FILE)
        state = {
            "format_version": FORMAT_VERSION,
            "step": step,
            "history": history or [],
            "sampler_state": sampler_state,
            "rng_states": rng_states or [capture_rng_state()],
            "train_config": train_config,
            "sha256": {name: _sha256(tmp / name) for name in names},
        }
        (tmp / STATE_FILE).write_text(json.dumps(state), encoding="utf-8")
        _fsync_tree(tmp)
    except (OSError, RuntimeError, SafetensorError) as err:  # torch.save wraps OSErrors
        problem = _write_problem(err, tmp)  # before the cleanup frees the space
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"cannot save checkpoint {final}: {problem}; nothing was "
                              f"replaced, earlier checkpoints are intact") from None
    if final.exists():  # saving a step again (e.g. after resuming): swap the old copy out
        old = checkpoint_dir / f".old-step_{step}-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)
    _fsync_dir(checkpoint_dir)
    if keep is not None:
        _prune(checkpoint_dir, step, keep)
    return final


def check_writable(checkpoint_dir: str | Path) -> None:
    """Create `checkpoint_dir` if missing and create and remove a file in it, so that a
    read-only or misplaced directory stops a run at start-up rather than at its first save;
    CheckpointError in one line otherwise."""
    checkpoint_dir = Path(checkpoint_dir)
    try:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=checkpoint_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        problem = _write_problem(err, checkpoint_dir / ".write-check")
        raise CheckpointError(f"checkpoint dir {checkpoint_dir} is not writable: {problem}"
                              ) from None


def list_checkpoints(checkpoint_dir: str | Path) -> list[Path]:
    """Complete checkpoints (`step_<N>` with a trainer_state.json), oldest first."""
    return [path for _, path in _checkpoints(Path(checkpoint_dir))]


def latest_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    """The complete checkpoint with the highest step, or None; temp directories are ignored."""
    found = list_checkpoints(checkpoint_dir)
    return found[-1] if found else None


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and validate a checkpoint directory; CheckpointError names what is wrong."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} does not exist")
    missing = [name for name in (*CHECKSUMMED, STATE_FILE) if not (path / name).is_file()]
    if missing:
        raise CheckpointError(f"checkpoint {path} is incomplete: missing {', '.join(missing)}")
    try:
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
        step, checksums = state["step"], state["sha256"]
        json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(f"checkpoint {path}: invalid JSON metadata ({err})") from None
    _check_files(path, checksums, CHECKSUMMED)
    try:
        model_state = load_file(path / MODEL_FILE)
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"checkpoint {path}: {MODEL_FILE} is corrupt ({err})") from None
    optimizer_state, scheduler_state = (_torch_load(path / name)
                                        for name in (OPTIMIZER_FILE, SCHEDULER_FILE))
    carried = None
    if CARRIED_FILE in checksums:  # recorded: it must be there and intact
        _check_files(path, checksums, (CARRIED_FILE,))
        try:
            carried = load_file(path / CARRIED_FILE)
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"checkpoint {path}: {CARRIED_FILE} is corrupt ({err})"
                                  ) from None
    try:
        return Checkpoint(path=path, step=int(step), model_state=model_state,
                          optimizer_state=optimizer_state, scheduler_state=scheduler_state,
                          sampler_state=state["sampler_state"], rng_states=state["rng_states"],
                          history=state["history"], train_config=state["train_config"],
                          carried_states=carried)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path}: {STATE_FILE} lacks {err}") from None


def _prune(checkpoint_dir: Path, step: int, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints up to `step`. A symlinked step_<N> (say, an
    archived run linked back in) is the user's: it is neither renamed, followed nor counted."""
    older = [path for s, path in _checkpoints(checkpoint_dir)
             if s <= step and not path.is_symlink()]
    for path in older[:-keep]:
        # renamed first: a kill during the deletion leaves a temp dir, not a broken step
        doomed = checkpoint_dir / f".old-{path.name}-{os.getpid()}"
        os.replace(path, doomed)
        shutil.rmtree(doomed)


def _remove_leftovers(checkpoint_dir: Path) -> None:
    """Delete temp dirs (`.tmp-*-<pid>`, `.old-*-<pid>`) of saves whose process is gone (killed
    while saving): they are never complete checkpoints. A live process's are left alone."""
    for path in checkpoint_dir.iterdir():
        match = LEFTOVER.fullmatch(path.name)
        if match and path.is_dir() and not _alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own leftover, from an earlier failed save
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _write_problem(err: Exception, directory: Path) -> str:
    """The reason a write failed, in a few words: disk full is named as such (torch.save and
    safetensors report it in their own words, so the free space decides as well)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    full = getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or \
        "No space left" in text
    if not full:
        with contextlib.suppress(OSError):
            full = shutil.disk_usage(directory.parent).free < (1 << 20)
    return f"disk full ({text})" if full else text


def _checkpoints(checkpoint_dir: Path) -> list[tuple[int, Path]]:
    if not checkpoint_dir.is_dir():
        return []
    found = []
    for path in checkpoint_dir.iterdir():
        match = STEP_DIR.fullmatch(path.name)
        if match and (path / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def verify_checksums(path: str | Path, names: tuple[str, ...] = CHECKSUMMED) -> bool:
    """Check a checkpoint's files against their recorded SHA-256 (a flipped bit inside a tensor
    passes every format check and loads as silently wrong weights): `names` against
    trainer_state.json where it exists, else the weights against the checksum in their own
    header, so that losing trainer_state.json does not switch the check off. Returns False when
    nothing is recorded (a plain `save_pretrained`); CheckpointError on a mismatch, or on
    trainer-written weights whose checksum is gone."""
    path = Path(path)
    if not (path / STATE_FILE).is_file():
        weights = path / MODEL_FILE
        return MODEL_FILE in names and weights.is_file() and _check_embedded_checksum(weights)
    try:
        checksums = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))["sha256"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(f"checkpoint {path}: invalid JSON metadata ({err})") from None
    _check_files(path, checksums, names)
    return True


def _embed_checksum(path: Path) -> None:
    """Write the SHA-256 of the tensor bytes into the safetensors header's metadata, so that the
    weights carry their own checksum. save_pretrained cannot add metadata, so the tensor bytes
    are shifted in place to make room for the longer header (a copy would need the weights'
    size again on a disk that may be nearly full)."""
    header, start = _read_header(path)
    header["__metadata__"] = {**header.get("__metadata__", {}),
                              WEIGHTS_FORMAT: str(FORMAT_VERSION),
                              WEIGHTS_SHA256: _sha256(path, start)}
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # safetensors keeps the tensor bytes 8-aligned
    head = len(encoded).to_bytes(8, "little") + encoded
    with open(path, "r+b") as f:
        _shift_tail(f, start, len(head) - start)  # >= 0: the header only gained keys
        f.seek(0)
        f.write(head)


def _shift_tail(f: IO[bytes], start: int, by: int) -> None:
    """Move the bytes from `start` to the end of `f` forward by `by`, the last chunk first so
    that no byte is overwritten before it is read."""
    end = f.seek(0, os.SEEK_END)
    while end > start:
        size = min(CHUNK, end - start)
        end -= size
        f.seek(end)
        chunk = f.read(size)
        f.seek(end + by)
        f.write(chunk)


def _check_embedded_checksum(path: Path) -> bool:
    """Check trainer-written weights against the checksum in their header; False for weights
    without hololm's metadata. Either key marks them as trainer-written, so a damaged key
    name cannot pass them off as a plain save_pretrained."""
    header, start = _read_header(path)
    metadata = header.get("__metadata__")
    if not isinstance(metadata, dict) or not metadata.keys() & {WEIGHTS_FORMAT, WEIGHTS_SHA256}:
        return False
    if not isinstance(metadata.get(WEIGHTS_SHA256), str):
        raise CheckpointError(f"checkpoint {path.parent}: {path.name} was written by the "
                              f"trainer but its checksum is missing")
    if metadata[WEIGHTS_SHA256] != _sha256(path, start):
        raise CheckpointError(f"checkpoint {path.parent}: {path.name} is corrupt "
                              f"(checksum mismatch)")
    return True


def _read_header(path: Path) -> tuple[dict[str, Any], int]:
    """A safetensors file's JSON header and the offset of its first tensor byte."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        raw = f.read(size) if 0 < size <= MAX_HEADER else b""
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        header = None
    if not isinstance(header, dict):
        raise CheckpointError(f"checkpoint {path.parent}: {path.name} is corrupt "
                              f"(not a safetensors header)")
    return header, 8 + size


def _check_files(path: Path, checksums: Any, names: tuple[str, ...]) -> None:
    if not isinstance(checksums, dict):
        raise CheckpointError(f"checkpoint {path}: {STATE_FILE} has no checksums")
    for name in names:
        if not (path / name).is_file():
            raise CheckpointError(f"checkpoint {path} is incomplete: missing {name}")
        if checksums.get(name) != _sha256(path / name):
            raise CheckpointError(f"checkpoint {path}: {name} is corrupt (checksum mismatch)")


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many exception types on a bad file
        raise CheckpointError(f"checkpoint {path.parent}: {path.name} is corrupt "
                              f"({type(err).__name__})") from None


@contextlib.contextmanager
def no_hf_progress_bars() -> Iterator[None]:
    """save_pretrained draws a "Writing model shards" bar, which would break the training bar;
    from_pretrained a "Loading weights" one, which would break a one-line error."""
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _sha256(path: Path, start: int = 0) -> str:
    """Of the bytes from `start` to the end of the file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(start)
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_tree(directory: Path) -> None:
    """Flush every file, so a crash right after the rename cannot leave empty files behind it."""
    for path in directory.iterdir():
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"))


def _bytes_tensor(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(_unb64(text)), dtype=torch.uint8)
