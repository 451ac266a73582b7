"""Checkpoints: exact round trip, keep-last-N, atomic writes (a leftover temp dir is ignored),
and one-line CheckpointErrors for missing, partial and corrupt checkpoints."""

from __future__ import annotations

import hashlib
import json
import random
import shutil

import numpy as np
import pytest
import torch

from hololm.data.tokenizers import byte_tokenizer
from hololm.errors import CheckpointError
from hololm.models.presets import build_model
from hololm.optim import build_optimizer
from hololm.train.checkpoint import (
    capture_rng_state,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from hololm.train.schedule import build_scheduler


def _setup():
    model = build_model("long", "tiny", vocab_size=320, seq_len=32, hidden_size=32,
                        num_hidden_layers=2, num_attention_heads=2)
    optimizer = build_optimizer(model, "muon")
    scheduler = build_scheduler(optimizer, 2, 10)
    ids = torch.randint(0, 257, (2, 16))
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    scheduler.step()
    return model, optimizer, scheduler


def _save(directory, step, model, optimizer, scheduler, keep=None):
    return save_checkpoint(directory, model, byte_tokenizer(), optimizer, scheduler,
                           {"position": step}, step, {"model_type": "long"},
                           history=[{"step": step, "loss": 1.5}], keep=keep)


def test_round_trip(tmp_path):
    model, optimizer, scheduler = _setup()
    path = _save(tmp_path, 1, model, optimizer, scheduler)
    assert path == tmp_path / "step_1"
    assert {"model.safetensors", "config.json", "tokenizer.json", "optimizer.pt",
            "scheduler.pt", "trainer_state.json"} <= {p.name for p in path.iterdir()}
    ckpt = load_checkpoint(path)
    assert ckpt.step == 1 and ckpt.sampler_state == {"position": 1}
    assert ckpt.history == [{"step": 1, "loss": 1.5}]
    assert ckpt.train_config == {"model_type": "long"}

    fresh, fresh_opt, fresh_sched = _setup()
    ckpt.load_model_state(fresh)
    fresh_opt.load_state_dict(ckpt.optimizer_state)
    fresh_sched.load_state_dict(ckpt.scheduler_state)
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
    assert fresh.lm_head.weight is fresh.get_input_embeddings().weight  # still tied
    assert fresh_sched.state_dict() == scheduler.state_dict()
    assert fresh_opt.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    assert str(fresh_opt.state_dict()) == str(optimizer.state_dict())


def test_rng_state_round_trip():
    state = json.loads(json.dumps(capture_rng_state()))  # JSON-safe
    expected = (random.random(), np.random.rand(), torch.rand(3))
    restore_rng_state(state)
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert got[:2] == expected[:2] and torch.equal(got[2], expected[2])


def test_keep_last_and_leftover_temp_dir(tmp_path):
    model, optimizer, scheduler = _setup()
    for step in (1, 2, 3):
        _save(tmp_path, step, model, optimizer, scheduler, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_2", "step_3"]
    # a run killed while writing step_4 leaves only its temp dir, half written
    partial = tmp_path / ".tmp-step_4-12345"
    shutil.copytree(tmp_path / "step_3", partial)
    (partial / "trainer_state.json").unlink()
    (partial / "model.safetensors").write_bytes(b"\0" * 10)
    assert latest_checkpoint(tmp_path) == tmp_path / "step_3"
    assert load_checkpoint(latest_checkpoint(tmp_path)).step == 3
    # saving a step that exists replaces it whole
    _save(tmp_path, 3, model, optimizer, scheduler, keep=2)
    assert load_checkpoint(tmp_path / "step_3").step == 3
    assert latest_checkpoint(tmp_path / "nothing-here") is None


@pytest.mark.parametrize(("damage", "message"), [
    (lambda p: shutil.rmtree(p), "does not exist"),
    (lambda p: (p / "optimizer.pt").unlink(), "incomplete: missing optimizer.pt"),
    (lambda p: (p / "trainer_state.json").write_text("{not json"), "invalid JSON"),
    (lambda p: (p / "config.json").write_text("{"), "invalid JSON"),
    (lambda p: (p / "model.safetensors").write_bytes(b"garbage"), "model.safetensors is corrupt"),
    (lambda p: _flip_last_byte(p / "model.safetensors"), "model.safetensors is corrupt"),
    (lambda p: _truncate(p / "scheduler.pt"), "scheduler.pt is corrupt"),
])
def test_damaged_checkpoint(tmp_path, damage, message):
    model, optimizer, scheduler = _setup()
    path = _save(tmp_path, 1, model, optimizer, scheduler)
    damage(path)
    with pytest.raises(CheckpointError, match=message) as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value)


def test_weights_only_load_refuses_code(tmp_path):
    """A pickled object in optimizer.pt is refused even when its checksum is recorded."""
    model, optimizer, scheduler = _setup()
    path = _save(tmp_path, 1, model, optimizer, scheduler)
    torch.save({"state": _Evil()}, path / "optimizer.pt")
    state = json.loads((path / "trainer_state.json").read_text())
    state["sha256"]["optimizer.pt"] = hashlib.sha256((path / "optimizer.pt").read_bytes()
                                                     ).hexdigest()
    (path / "trainer_state.json").write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="optimizer.pt is corrupt"):
        load_checkpoint(path)


class _Evil:
    pass


def _flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path):
    path.write_bytes(path.read_bytes()[:20])
