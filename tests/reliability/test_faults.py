"""Faults during training: each test injects one and checks that no data is lost and no wrong
answer goes unnoticed.

- A run SIGKILLed at any moment (mid-write of each checkpoint file, before the rename, while
  pruning an old checkpoint, mid-step) leaves only loadable checkpoints, and resuming reproduces
  the uninterrupted run's losses and weights exactly. A naive `torch.save` into `step_<N>/`
  would leave a half-written latest checkpoint; a naive pruning a half-deleted listed one.
- A non-finite loss or gradient skips the step (weights and optimizer state unchanged), is
  reported and logged; `max_bad_steps` in a row stop the run with `TrainingDivergedError` and the
  last checkpoint intact. A naive loop would step on NaN gradients and poison the weights.
- A disk that fills up (or a write the OS refuses) while saving raises `CheckpointError`, leaves
  the earlier checkpoint byte-identical and no temp directory behind.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers.modeling_utils

from hololm.cli import main as cli_main
from hololm.data.tokenizers import byte_tokenizer
from hololm.errors import CheckpointError, TrainingDivergedError
from hololm.models.presets import build_model
from hololm.optim import build_optimizer
from hololm.train import checkpoint, trainer
from hololm.train.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from hololm.train.config import TrainConfig
from hololm.train.schedule import build_scheduler
from tests.reliability.runs import TINY, run_config, run_values

KILLS = {"model_write": "step_2", "optimizer_write": "step_2", "before_rename": "step_2",
         "prune": "step_4", "mid_step": "step_4"}  # scenario -> the checkpoint left as latest


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def whole(tmp_path_factory, cache_dir) -> dict:
    """The uninterrupted run every faulty one is compared with."""
    return trainer.train(run_config(tmp_path_factory.mktemp("whole"), cache_dir))


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _tree_digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.iterdir()}


def _leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.startswith(".")]


# ---- killed at any moment ------------------------------------------------------------------

@pytest.fixture(scope="module")
def killed(tmp_path_factory, cache_dir, whole) -> Path:
    """One subprocess forks a child per scenario; each child SIGKILLs itself mid-run."""
    root = tmp_path_factory.mktemp("killed")
    config_file = root / "config.json"
    config_file.write_text(json.dumps(run_values(root, cache_dir)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("killed_runs.py")),
                           str(config_file), str(root), *KILLS], capture_output=True, text=True,
                          timeout=300, env=env, cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr[-3000:]
    return root


@pytest.mark.parametrize("scenario", list(KILLS))
def test_killed_run_leaves_loadable_checkpoints_and_resumes_exactly(scenario, killed, whole,
                                                                   cache_dir):
    status = json.loads((killed / "status.json").read_text())
    assert status[scenario] == -signal.SIGKILL, f"the {scenario} hook did not fire"
    out = killed / scenario
    checkpoints = out / "checkpoints"
    assert latest_checkpoint(checkpoints).name == KILLS[scenario]
    for path in list_checkpoints(checkpoints):  # every listed checkpoint is whole
        load_checkpoint(path)

    resumed = trainer.train(TrainConfig(**run_values(out, cache_dir, resume=True,
                                                     checkpoint_dir=str(checkpoints))))
    assert [r["loss"] for r in resumed["history"]] == [r["loss"] for r in whole["history"]]
    assert _equal(_weights(resumed["model"]), _weights(whole["model"]))
    assert _leftovers(checkpoints) == []  # the killed save's temp dir is cleaned up


# ---- non-finite losses and gradients -------------------------------------------------------

class _InfGrad(torch.autograd.Function):
    """Identity forward; the backward pass returns inf: a finite loss with broken gradients."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


def _poison(monkeypatch, calls: set[int] | None, fault: str) -> None:
    """Training micro-batch number n (1-based, evaluations not counted) in `calls` (None: all)
    gets `fault`: a NaN loss, an inf loss, or an inf gradient."""
    real = trainer.token_loss
    seen = [0]

    def token_loss(model, batch, device, eos_token_id=None):
        loss_sum, count = real(model, batch, device, eos_token_id)
        if torch.is_grad_enabled():
            seen[0] += 1
            if calls is None or seen[0] in calls:
                if fault == "inf_grad":
                    return _InfGrad.apply(loss_sum), count
                return loss_sum * float("nan" if fault == "nan_loss" else "inf"), count
        return loss_sum, count

    monkeypatch.setattr(trainer, "token_loss", token_loss)


def _snapshot_steps(monkeypatch) -> dict[int, tuple[dict, dict]]:
    """step -> (weights, optimizer state) right after the step."""
    snapshots: dict[int, tuple[dict, dict]] = {}
    real = trainer._Run._train_step

    def train_step(self, step):
        record = real(self, step)
        opt = self.optimizer.state_dict()["state"]
        flat = {f"{i}.{k}": v.clone() for i, s in opt.items() for k, v in s.items()
                if isinstance(v, torch.Tensor)}
        snapshots[step] = (_weights(self.accelerator.unwrap_model(self.model)), flat)
        return record

    monkeypatch.setattr(trainer._Run, "_train_step", train_step)
    return snapshots


@pytest.mark.parametrize("fault", ["nan_loss", "inf_loss", "inf_grad"])
def test_non_finite_step_is_skipped_reported_and_logged(fault, tmp_path, cache_dir, whole,
                                                        monkeypatch, capsys):
    """With 2 micro-batches per step, poisoning the first micro-batch of step 3 skips step 3:
    weights and optimizer state stay those of step 2; the scheduler advances; training goes on."""
    _poison(monkeypatch, {5}, fault)
    snapshots = _snapshot_steps(monkeypatch)
    result = trainer.train(run_config(tmp_path, cache_dir, grad_accum_steps=2, optimizer="muon"))

    assert result["steps"] == 6
    assert [r.get("skipped", False) for r in result["history"]] == [False] * 2 + [True] + \
        [False] * 3
    assert _equal(snapshots[3][0], snapshots[2][0]) and _equal(snapshots[3][1], snapshots[2][1])
    assert not _equal(snapshots[4][0], snapshots[3][0])
    assert all(torch.isfinite(v).all() for v in result["model"].state_dict().values())
    assert [r["lr"] for r in result["history"]] == [r["lr"] for r in whole["history"]]
    loss = result["history"][2]["loss"]
    assert (loss == loss and abs(loss) != float("inf")) == (fault == "inf_grad")
    assert "step 3: non-finite loss or gradient" in capsys.readouterr().out
    with open(tmp_path / "log.csv", newline="") as f:
        rows = {r["step"]: r for r in csv.DictReader(f)}
    assert rows["3"]["loss"] == str(loss) and rows["4"]["loss"] != rows["3"]["loss"]


def test_repeated_non_finite_steps_stop_with_the_last_checkpoint_intact(tmp_path, cache_dir,
                                                                        monkeypatch):
    """NaN from step 3 on: steps 3, 4 and 5 are skipped and the run stops at 5 with a
    TrainingDivergedError naming the last checkpoint (step 4, saved after a skipped step, holds
    the weights of step 2). Resuming without the fault finishes the run."""
    _poison(monkeypatch, set(range(3, 100)), "nan_loss")
    cfg = run_config(tmp_path, cache_dir, keep_checkpoints=3, max_bad_steps=3)
    with pytest.raises(TrainingDivergedError, match=r"3 consecutive steps \(3-5\).*step_4"):
        trainer.train(cfg)
    checkpoints = Path(cfg.resolved_checkpoint_dir)
    assert [p.name for p in list_checkpoints(checkpoints)] == ["step_2", "step_4"]
    two, four = (load_checkpoint(checkpoints / name) for name in ("step_2", "step_4"))
    assert _equal(two.model_state, four.model_state)
    assert all(torch.isfinite(v).all() for v in four.model_state.values())
    with open(tmp_path / "log.csv", newline="") as f:
        assert [r["loss"] for r in csv.DictReader(f)][2:] == ["nan"] * 3

    monkeypatch.undo()
    resumed = trainer.train(run_config(tmp_path, cache_dir, keep_checkpoints=3, resume=True))
    assert resumed["steps"] == 6 and torch.isfinite(torch.tensor(resumed["final_loss"]))


def test_divergence_is_one_line_from_the_cli(tmp_path, cache_dir, monkeypatch, capsys):
    _poison(monkeypatch, None, "nan_loss")
    cfg = run_values(tmp_path, cache_dir, max_bad_steps=2)
    argv = ["train"]
    for key, value in cfg.items():
        argv += [f"--{key}", json.dumps(value) if isinstance(value, dict) else str(value)]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2 consecutive steps (1-2)" in err[0] and "Traceback" not in err[0]


@pytest.mark.slow
def test_two_processes_agree_to_skip(tmp_path, cache_dir):
    """NaN on rank 1 only at step 3 (accelerate launch, 2 CPU processes): both ranks skip it and
    keep identical weights."""
    values = run_values(tmp_path, cache_dir, batch_size=2)
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(values))
    trainer.train(run_config(tmp_path / "warm", cache_dir))  # fills the token cache
    launcher = Path(sys.executable).with_name("accelerate")
    command = [str(launcher), "launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()),
               str(Path(__file__).with_name("nan_rank_run.py")), str(config_file),
               str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env,
                          cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for rank in ranks:
        assert rank["skipped"] == [3]
        assert rank["digests"]["3"] == rank["digests"]["2"] != rank["digests"]["4"]
    assert ranks[0]["digests"] == ranks[1]["digests"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- disk full and refused writes while saving ---------------------------------------------

def _parts():
    model = build_model("long", "tiny", vocab_size=320, seq_len=32, **TINY)
    optimizer = build_optimizer(model, "adamw")
    return model, optimizer, build_scheduler(optimizer, 1, 10)


def _save(directory: Path, step: int, parts) -> Path:
    model, optimizer, scheduler = parts
    return save_checkpoint(directory, model, byte_tokenizer(), optimizer, scheduler, {}, step,
                           {"model_type": "long"}, keep=2)


def _enospc():
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _fill_disk(monkeypatch, where: str) -> None:
    """The write of `where` puts half its bytes on disk, then the disk is full."""
    if where == "model":
        real = transformers.modeling_utils.safe_save_file

        def save_file(tensors, filename, metadata=None):
            real(tensors, filename, metadata=metadata)
            os.truncate(filename, os.path.getsize(filename) // 2)
            raise _enospc()

        monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", save_file)
    elif where == "optimizer":
        real_save = torch.save

        def save(obj, f, *args, **kwargs):
            if not str(f).endswith(checkpoint.OPTIMIZER_FILE):
                return real_save(obj, f, *args, **kwargs)
            buffer = io.BytesIO()
            real_save(obj, buffer)
            Path(f).write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            # torch.save reports a full disk as a RuntimeError without errno
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos")

        monkeypatch.setattr(torch, "save", save)
        monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda path: _Usage(free=0))
    else:  # the trainer state, written last
        real_write = Path.write_text

        def write_text(self, data, *args, **kwargs):
            if self.name == checkpoint.STATE_FILE:
                real_write(self, data[: len(data) // 2], *args, **kwargs)
                raise _enospc()
            return real_write(self, data, *args, **kwargs)

        monkeypatch.setattr(Path, "write_text", write_text)


class _Usage:
    def __init__(self, free: int):
        self.total, self.used, self.free = 1 << 30, 1 << 30, free


@pytest.mark.parametrize("where", ["model", "optimizer", "state"])
@pytest.mark.parametrize("step", [2, 1], ids=["new-step", "same-step"])
def test_disk_full_while_saving_keeps_the_old_checkpoint(where, step, tmp_path, monkeypatch):
    parts = _parts()
    old = _save(tmp_path, 1, parts)
    before = _tree_digest(old)
    _fill_disk(monkeypatch, where)
    with pytest.raises(CheckpointError, match=rf"cannot save checkpoint .*step_{step}: disk full"
                                              r".*earlier checkpoints are intact") as err:
        _save(tmp_path, step, parts)
    monkeypatch.undo()
    assert "\n" not in str(err.value)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_1"]
    assert _tree_digest(old) == before and load_checkpoint(old).step == 1
    assert _leftovers(tmp_path) == []


def test_write_refused_by_the_os_keeps_the_old_checkpoint(tmp_path):
    """A real OS-level failure mid-file: RLIMIT_FSIZE makes writes past half the model file's
    size fail (EFBIG) inside safetensors' own writer."""
    parts = _parts()
    old = _save(tmp_path, 1, parts)
    before = _tree_digest(old)
    limit = (old / checkpoint.MODEL_FILE).stat().st_size // 2
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        with pytest.raises(CheckpointError, match=r"step_2: .*(too large|os error 27)"):
            _save(tmp_path, 2, parts)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
    assert _tree_digest(old) == before and load_checkpoint(old).step == 1
    assert _leftovers(tmp_path) == []


def test_disk_full_during_training_stops_with_one_line(tmp_path, cache_dir, monkeypatch,
                                                       capsys):
    """The trainer passes the CheckpointError on (the run stops; step_2 stays loadable) and
    the CLI prints it as one line with exit status 2."""
    real = checkpoint.save_checkpoint

    def save(directory, model, *args, **kwargs):
        step = args[4]
        if step == 4:
            _fill_disk(monkeypatch, "state")
        return real(directory, model, *args, **kwargs)

    monkeypatch.setattr(trainer, "save_checkpoint", save)
    cfg = run_values(tmp_path, cache_dir)
    argv = ["train"]
    for key, value in cfg.items():
        argv += [f"--{key}", json.dumps(value) if isinstance(value, dict) else str(value)]
    assert cli_main(argv) == 2
    monkeypatch.undo()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "step_4: disk full" in err[0]
    checkpoints = tmp_path / "checkpoints"
    assert [p.name for p in list_checkpoints(checkpoints)] == ["step_2"]
    assert load_checkpoint(checkpoints / "step_2").step == 2 and _leftovers(checkpoints) == []
