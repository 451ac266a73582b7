"""TrainConfig: defaults, JSON / YAML files, and one-line ConfigErrors for bad settings."""

from __future__ import annotations

import json

import pytest

from hololm.errors import ConfigError
from hololm.train.config import TrainConfig


def test_defaults_and_checkpoint_dir_under_output_dir():
    cfg = TrainConfig(output_dir="out")
    assert cfg.resolved_checkpoint_dir == "out/checkpoints"
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    moved = TrainConfig.from_dict({**cfg.to_dict(), "output_dir": "elsewhere"})
    assert moved.resolved_checkpoint_dir == "elsewhere/checkpoints"
    assert TrainConfig(checkpoint_dir="ckpt").resolved_checkpoint_dir == "ckpt"


def test_from_json_and_yaml(tmp_path):
    values = {"model_type": "hsn", "max_steps": 7, "lr": 1e-3,
              "model_overrides": {"dim": 64}, "resume": True}
    (tmp_path / "c.json").write_text(json.dumps(values))
    # YAML 1.1 reads 3e-4 (no dot) as a string: still a float lr
    (tmp_path / "c.yaml").write_text("model_type: hsn\nmax_steps: 7\nlr: 3e-4\n"
                                     "model_overrides: {dim: 64}\nresume: true\n")
    from_json = TrainConfig.from_file(tmp_path / "c.json")
    from_yaml = TrainConfig.from_file(tmp_path / "c.yaml")
    assert (from_json.model_type, from_json.max_steps, from_json.lr) == ("hsn", 7, 1e-3)
    assert from_yaml.lr == 3e-4 and from_yaml.model_overrides == {"dim": 64}
    assert from_yaml.resume is True


def test_unknown_key_lists_valid_keys(tmp_path):
    (tmp_path / "c.yaml").write_text("max_step: 10\n")
    with pytest.raises(ConfigError, match="unknown config key.*max_step;.*max_steps"):
        TrainConfig.from_file(tmp_path / "c.yaml")


@pytest.mark.parametrize(("values", "message"), [
    ({"model_type": "bert"}, "model_type='bert' is not one of"),
    ({"precision": "fp16"}, "precision='fp16'"),
    ({"max_steps": 0}, "max_steps=0 must be at least 1"),
    ({"max_steps": 2.5}, "max_steps=2.5 must be int"),
    ({"lr": "fast"}, "lr='fast' must be float"),
    ({"gradient_checkpointing": "yes"}, "must be bool"),
    ({"grad_clip": -1.0}, "must not be negative"),
])
def test_bad_values(values, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**values)


def test_bad_files(tmp_path):
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "c.toml").write_text("")
    for name, message in (("bad.yaml", "not valid"), ("list.json", "must hold a mapping"),
                          ("c.toml", "must end in"), ("missing.json", "cannot read")):
        with pytest.raises(ConfigError, match=message) as err:
            TrainConfig.from_file(tmp_path / name)
        assert "\n" not in str(err.value)
