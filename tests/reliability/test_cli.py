"""The command line under attack: every user mistake is one line on stderr, exit status 2, no
traceback (`--debug` shows it), and unknown names list the valid choices.

A naive CLI fails these: it lets FileExistsError, json/yaml errors or safetensors errors escape
as tracebacks, loads a bit-flipped weight file without noticing (checksums unchecked), builds a
default-size model for a misspelt override, runs a `!!python` YAML tag, or lets HF progress bars
and datasets logs add lines to a one-line error.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from hololm.cli import main
from hololm.errors import CheckpointError
from hololm.models.registry import NAMES

TINY = '{"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}'


def train_args(out: Path, cache: Path, *extra: str) -> list[str]:
    return ["train", "--model_type", "long", "--model_size", "tiny", "--model_overrides", TINY,
            "--seq_len", "16", "--batch_size", "2", "--max_steps", "2", "--save_steps", "2",
            "--eval_steps", "100", "--eval_batches", "1", "--sample_tokens", "0",
            "--dataset", "stdlib", "--tokenizer", "byte", "--max_train_tokens", "20000",
            "--max_eval_tokens", "2000", "--precision", "fp32", "--cache_dir", str(cache),
            "--output_dir", str(out), *extra]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished two-step run: <run>/checkpoints/step_2."""
    root = tmp_path_factory.mktemp("cli")
    assert main(train_args(root / "run", root / "cache")) == 0
    return root / "run"


def one_line_error(capsys, argv: list[str], *expected: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, f"exit status {code}; stderr: {err}"
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, f"not one line:\n{err}"
    for text in expected:
        assert text in err, f"{text!r} not in {err!r}"
    return err


@pytest.mark.parametrize("flag,value,choices", [
    ("--model_type", "rwkv", ", ".join(repr(name) for name in NAMES)),
    ("--model_size", "huge", "'tiny', 'small', 'medium'"),
    ("--dataset", "no-such-corpus", "stdlib, shakespeare"),
    ("--tokenizer", "no-such-tokenizer", "tokenizer='byte'"),
    ("--optimizer", "sgd", "'adamw', 'muon'"),
    ("--precision", "fp8", "'auto', 'fp32', 'bf16'"),
])
def test_unknown_names_list_the_valid_choices(flag, value, choices, tmp_path, capsys,
                                              monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    argv = train_args(tmp_path / "out", tmp_path / "cache", flag, value)
    one_line_error(capsys, argv, value, choices)


def test_unknown_dataset_in_eval_lists_the_choices(run_dir, capsys):
    one_line_error(capsys, ["eval", "--checkpoint", str(run_dir), "--dataset", "nope"],
                   "unknown dataset 'nope'", "stdlib")


def test_misspelt_model_override_is_refused_not_ignored(tmp_path, capsys):
    argv = train_args(tmp_path / "out", tmp_path / "cache", "--model_overrides",
                      '{"hiden_size": 64}')
    one_line_error(capsys, argv, "unknown model_overrides ['hiden_size']", "hidden_size")
    assert not (tmp_path / "out" / "checkpoints").exists()


CONFIGS = {
    "missing.json": (None, "cannot read config file"),
    "broken.json": ("{not json", "is not valid"),
    "list.json": ("[1, 2]", "must hold a mapping"),
    "unknown.json": ('{"seq_lenn": 32}', "unknown config key(s) seq_lenn; valid keys:"),
    "type.json": ('{"seq_len": "long"}', "seq_len='long' must be int"),
    "broken.yaml": ("a: [\n", "is not valid"),
    "config.toml": ("seq_len = 32", "must end in .json, .yaml or .yml"),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_bad_config_files_are_one_line(name, tmp_path, capsys):
    text, message = CONFIGS[name]
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    one_line_error(capsys, train_args(tmp_path / "out", tmp_path / "cache", "--config",
                                      str(path)), message)


def test_yaml_config_cannot_run_code(tmp_path, capsys):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(f'seq_len: !!python/object/apply:os.system ["touch {marker}"]\n')
    one_line_error(capsys, train_args(tmp_path / "out", tmp_path / "cache", "--config",
                                      str(path)), "is not valid")
    assert not marker.exists()


def test_an_output_dir_that_is_a_file_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "taken"
    blocker.write_text("not a directory")
    one_line_error(capsys, train_args(blocker, tmp_path / "cache"), "File exists")
    assert blocker.read_text() == "not a directory"


def test_unreadable_dataset_file_is_one_line(tmp_path, capsys):
    """datasets logs the parse error before raising it: that line must not show."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": \n')
    one_line_error(capsys, train_args(tmp_path / "out", tmp_path / "cache", "--dataset",
                                      str(bad)), "could not read", "bad.jsonl")


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))


def _plain(step: Path) -> None:
    """A save_pretrained directory without the trainer's checksums."""
    (step / "trainer_state.json").unlink()


def _drop_a_tensor(step: Path) -> None:
    _plain(step)
    tensors = load_file(step / "model.safetensors")
    tensors.pop(sorted(tensors)[-1])
    save_file(tensors, step / "model.safetensors", metadata={"format": "pt"})


def _widen_config(step: Path) -> None:
    _plain(step)
    config = json.loads((step / "config.json").read_text())
    config["hidden_size"] = 64
    (step / "config.json").write_text(json.dumps(config))


CHECKPOINTS = {
    "missing": (lambda step: shutil.rmtree(step.parent.parent), "does not exist"),
    "empty": (lambda step: [shutil.rmtree(p) for p in step.parent.glob("step_*")],
              "no checkpoint in"),
    "no weights": (lambda step: (step / "model.safetensors").unlink(), "model.safetensors"),
    "truncated weights": (lambda step: (step / "model.safetensors").write_bytes(b"\x10" * 9),
                          "model.safetensors is corrupt"),
    "bit flip in weights": (lambda step: _flip_last_byte(step / "model.safetensors"),
                            "model.safetensors is corrupt (checksum mismatch)"),
    "broken config": (lambda step: (step / "config.json").write_text("{"), "config.json"),
    "foreign config": (lambda step: (_plain(step), (step / "config.json").write_text(
        '{"model_type": "no-such-family"}')), "no-such-family"),
    "missing tensor": (_drop_a_tensor, "lacks or mismatches 1 weights"),
    "mismatched config": (_widen_config, "lacks or mismatches"),
    "no tokenizer": (lambda step: (step / "tokenizer.json").unlink(), "no tokenizer"),
}


@pytest.mark.parametrize("command", ["generate", "eval"])
@pytest.mark.parametrize("damage", list(CHECKPOINTS))
def test_damaged_checkpoints_are_refused_in_one_line(damage, command, run_dir, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    step = copy / "checkpoints" / "step_2"
    breaker, message = CHECKPOINTS[damage]
    breaker(step)
    extra = ["--max_new_tokens", "2"] if command == "generate" else [
        "--context_lengths", "8", "--max_windows", "1"]
    # without trainer_state.json a step is a plain save_pretrained directory: named directly
    target = copy if (step / "trainer_state.json").exists() or not step.exists() else step
    one_line_error(capsys, [command, "--checkpoint", str(target), *extra], message)


def test_resume_refuses_damaged_or_missing_checkpoints(run_dir, tmp_path, capsys):
    missing = tmp_path / "no-such-run" / "step_7"  # a named checkpoint must exist
    one_line_error(capsys, train_args(tmp_path / "fresh", tmp_path / "cache", "--resume",
                                      str(missing)), "does not exist")
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    step = copy / "checkpoints" / "step_2"
    with open(step / "optimizer.pt", "ab") as f:
        f.write(b"garbage")
    before = {p.name: p.read_bytes() for p in step.iterdir()}
    one_line_error(capsys, train_args(copy, tmp_path / "cache", "--max_steps", "4", "--resume"),
                   "optimizer.pt is corrupt (checksum mismatch)")
    assert {p.name: p.read_bytes() for p in step.iterdir()} == before  # nothing overwritten


def test_debug_shows_the_traceback_in_process(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        main(["--debug", "generate", "--checkpoint", str(tmp_path / "nowhere")])


def test_exit_status_of_the_real_process(tmp_path):
    done = subprocess.run([sys.executable, "-m", "hololm.cli", "eval", "--checkpoint",
                           str(tmp_path / "nowhere")], capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1",
                                            "OMP_NUM_THREADS": "1"})
    assert done.returncode == 2 and "does not exist" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
