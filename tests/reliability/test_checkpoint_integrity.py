"""Checkpoint integrity when a file goes missing, weights are not numbers, the checkpoint
directory cannot be written, or a user has linked a step directory in.

- A naive trainer keeps the weights' checksum only in trainer_state.json: delete that file and a
  flipped bit in model.safetensors loads as silently wrong weights. Here the weights carry their
  own checksum (in the safetensors header), so removing one file cannot switch the check off,
  and trainer-written weights whose checksum is gone are refused; a plain `save_pretrained`
  directory, which never had checksums, still loads.
- NaN/inf weights (a run that diverged before it was stopped) evaluate to `nan` with exit status
  0, or crash inside sampling: here `eval` and `generate` refuse them in one line naming the
  tensor.
- A read-only checkpoint dir is found at start-up by `check_writable`, not at the first save.
- `--keep_checkpoints` pruning never renames, follows or deletes a symlinked step directory.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import torch

from hololm.cli import main
from hololm.data.tokenizers import byte_tokenizer
from hololm.errors import CheckpointError
from hololm.eval.checkpoints import load_model_and_tokenizer
from hololm.models.presets import build_model
from hololm.train import checkpoint
from hololm.train.checkpoint import list_checkpoints, save_checkpoint, verify_checksums

TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
COMMANDS = {"generate": ["--max_new_tokens", "2"],
            "eval": ["--context_lengths", "8", "--max_windows", "1"]}


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("long", "tiny", 320, 32, **TINY)


def _save(directory: Path, step: int = 1, model: torch.nn.Module | None = None,
          keep: int | None = None) -> Path:
    model = _model() if model is None else model
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    return save_checkpoint(directory, model, byte_tokenizer(), optimizer, scheduler, None, step,
                           {}, keep=keep)


def _one_line_error(capsys, argv: list[str], *expected: str) -> None:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, f"exit status {code}; stderr: {err}"
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for text in expected:
        assert text in err, f"{text!r} not in {err!r}"


def _header(path: Path) -> tuple[dict, bytes]:
    """A safetensors file's JSON header and its tensor bytes."""
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + size]), data[8 + size:]


def _write(path: Path, header: dict, tensors: bytes) -> None:
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + tensors)


def _flip_a_bit(path: Path) -> None:
    """The lowest mantissa bit of the last float: a finite, plausible, wrong weight."""
    data = bytearray(path.read_bytes())
    data[-4] ^= 0x01
    path.write_bytes(bytes(data))


# ---- checksums travel with the weights -----------------------------------------------------

def test_the_weights_record_their_own_checksum(tmp_path):
    step = _save(tmp_path)
    metadata = _header(step / checkpoint.MODEL_FILE)[0]["__metadata__"]
    assert metadata["format"] == "pt"  # what from_pretrained expects stays
    assert len(metadata["hololm.sha256"]) == 64
    (step / checkpoint.STATE_FILE).unlink()
    assert verify_checksums(step, (checkpoint.MODEL_FILE,)) is True


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_flipped_bit_is_caught_without_trainer_state(command, tmp_path, capsys):
    step = _save(tmp_path)
    (step / checkpoint.STATE_FILE).unlink()
    _flip_a_bit(step / checkpoint.MODEL_FILE)
    with pytest.raises(CheckpointError, match=r"model.safetensors is corrupt \(checksum mismatch"):
        load_model_and_tokenizer(step)
    _one_line_error(capsys, [command, "--checkpoint", str(step), *COMMANDS[command]],
                    "model.safetensors is corrupt (checksum mismatch)")


def test_trainer_weights_whose_checksum_was_removed_are_refused(tmp_path, capsys):
    step = _save(tmp_path)
    (step / checkpoint.STATE_FILE).unlink()
    header, tensors = _header(step / checkpoint.MODEL_FILE)
    del header["__metadata__"]["hololm.sha256"]
    _write(step / checkpoint.MODEL_FILE, header, tensors)
    with pytest.raises(CheckpointError, match="checksum is missing"):
        load_model_and_tokenizer(step)
    _one_line_error(capsys, ["generate", "--checkpoint", str(step), "--max_new_tokens", "2"],
                    "checksum is missing")


def test_a_plain_save_pretrained_directory_still_loads(tmp_path):
    model = _model()
    model.save_pretrained(tmp_path)
    byte_tokenizer().save_pretrained(tmp_path)
    assert verify_checksums(tmp_path) is False  # nothing recorded, nothing to check
    loaded, _ = load_model_and_tokenizer(tmp_path)
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


# ---- non-finite weights --------------------------------------------------------------------

@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_non_finite_weights_are_refused_in_one_line(command, value, tmp_path, capsys):
    """Saved through save_checkpoint, so every checksum matches: only the values are wrong."""
    model = _model()
    name = "model.layers.0.mlp.o_proj.weight"
    with torch.no_grad():
        model.state_dict()[name][3, 5] = value
    step = _save(tmp_path, model=model)
    with pytest.raises(CheckpointError, match=rf"weight {name} holds NaN or inf"):
        load_model_and_tokenizer(step)
    _one_line_error(capsys, [command, "--checkpoint", str(step), *COMMANDS[command]], name)


# ---- a checkpoint dir that cannot be written -----------------------------------------------

def test_check_writable_creates_the_directory_and_leaves_nothing(tmp_path):
    target = tmp_path / "a" / "b"
    checkpoint.check_writable(target)
    assert target.is_dir() and list(target.iterdir()) == []


def test_a_read_only_checkpoint_dir_is_one_line(tmp_path, monkeypatch):
    """Root may write a chmod-ed directory, so the file system refusing is simulated too."""
    target = tmp_path / "ro"
    target.mkdir()
    target.chmod(0o555)
    real_open = os.open

    def read_only(path, *args, **kwargs):
        if str(path).startswith(str(target)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(CheckpointError, match=r"ro is not writable.*Read-only") as err:
        checkpoint.check_writable(target)
    assert "\n" not in str(err.value)
    monkeypatch.undo()
    target.chmod(0o755)
    assert list(target.iterdir()) == []


def test_a_checkpoint_dir_below_a_file_is_one_line(tmp_path):
    (tmp_path / "file").write_text("in the way")
    with pytest.raises(CheckpointError, match="is not writable") as err:
        checkpoint.check_writable(tmp_path / "file" / "checkpoints")
    assert "\n" not in str(err.value)


# ---- pruning next to a user's symlink ------------------------------------------------------

def test_pruning_leaves_a_symlinked_step_alone(tmp_path):
    """step_1 was archived elsewhere and linked back in: pruning neither crashes nor renames,
    follows or counts the link; it deletes only real step directories."""
    checkpoints = tmp_path / "checkpoints"
    archived = _save(checkpoints, 1).rename(tmp_path / "archive")
    (checkpoints / "step_1").symlink_to(archived, target_is_directory=True)
    before = sorted(p.name for p in archived.iterdir())
    _save(checkpoints, 2, keep=1)
    _save(checkpoints, 3, keep=1)
    assert (checkpoints / "step_1").is_symlink()
    assert (checkpoints / "step_1").resolve() == archived.resolve()
    assert sorted(p.name for p in archived.iterdir()) == before
    assert [p.name for p in list_checkpoints(checkpoints)] == ["step_1", "step_3"]
    assert [p.name for p in checkpoints.iterdir() if p.name.startswith(".")] == []
