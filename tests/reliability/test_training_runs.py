"""Training runs that schedulers and people can trust: each test is an attack that a run used to
lose work to, or answer wrongly without a word.

- A sample prompt holding the end-of-text id (a short first held-out document) crashed every
  run at its first evaluation; a sample that fails is now reported and training goes on.
- `--lr` / `--weight_decay` / schedule changes on `--resume` were silently ignored (the restored
  optimizer kept the checkpoint's); they are applied, said, and recorded.
- SIGTERM (schedulers, `timeout`, container stops) saved nothing; it now saves like Ctrl-C and
  exits with 143.
- Two runs on one output directory corrupted it; the second is refused, a dead run's lock is not.
- A loss that explodes and never recovers, or collapses to ln(vocabulary), was not caught, and
  pruning deleted every checkpoint from before the collapse.
- Out of memory, a device that does not exist, a prompt that is not UTF-8, or a resume with
  another optimizer gave tracebacks; `--resume` before any checkpoint was an error.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hololm.cli import main as cli_main
from hololm.errors import CheckpointError, ConfigError, TrainingDivergedError
from hololm.models import LongForCausalLM
from hololm.train import trainer
from hololm.train.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from hololm.train.config import TrainConfig
from hololm.train.loss_watch import WINDOW, LossWatch
from hololm.train.run_lock import LOCK_FILE, RunLock
from hololm.train.schedule import warmup_cosine
from tests.reliability.runs import run_config, run_values

pytestmark = pytest.mark.usefixtures("one_thread")


def _argv(values: dict) -> list[str]:
    argv = ["train"]
    for key, value in values.items():
        if value is True:  # --resume alone: the latest checkpoint
            argv.append(f"--{key}")
        else:
            argv += [f"--{key}", json.dumps(value) if isinstance(value, dict) else str(value)]
    return argv


def _one_line(capsys, code: int, *expected: str) -> str:
    err = capsys.readouterr().err
    assert code == 2, f"exit status {code}; stderr: {err}"
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for text in expected:
        assert text in err, f"{text!r} not in {err!r}"
    return err


# ---- samples ---------------------------------------------------------------------------------

def test_a_sample_prompt_with_the_end_of_text_id_does_not_crash_the_run(tmp_path):
    """Three-word documents: the first 16 held-out tokens hold end-of-text ids, which generate()
    read as padding (a mask with holes the model refuses) at the first evaluation."""
    data = tmp_path / "short.jsonl"
    data.write_text("".join(json.dumps({"text": f"word {i} here"}) + "\n" for i in range(3000)))
    cfg = run_config(tmp_path / "run", str(tmp_path / "cache"), dataset=str(data), max_steps=4,
                     eval_steps=2, save_steps=4, sample_tokens=8)
    assert 256 in trainer.load_data(cfg)[2].tokens[:16].tolist()  # the attack is real
    result = trainer.train(cfg)
    assert result["steps"] == 4
    samples = (tmp_path / "run" / "samples.txt").read_text()
    assert samples.count("=== step") == 2


def test_a_failing_sample_is_reported_and_training_goes_on(tmp_path, cache_dir, monkeypatch,
                                                          capsys):
    def broken(self, *args, **kwargs):
        raise RuntimeError("sampling broke")

    monkeypatch.setattr(LongForCausalLM, "generate", broken)
    result = trainer.train(run_config(tmp_path, cache_dir, max_steps=2, eval_steps=1,
                                      sample_tokens=4))
    assert result["steps"] == 2
    out = capsys.readouterr().out
    assert "sample at step 1 failed, training goes on: RuntimeError: sampling broke" in out


# ---- resume with other hyperparameters -------------------------------------------------------

@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_resume_applies_a_new_lr_and_weight_decay(tmp_path, cache_dir, optimizer, capsys):
    trainer.train(run_config(tmp_path, cache_dir, max_steps=4, optimizer=optimizer))
    new = run_config(tmp_path, cache_dir, max_steps=8, lr=1e-4, muon_lr=0.005,
                     weight_decay=0.05, optimizer=optimizer, resume=True)
    result = trainer.train(new)
    out = capsys.readouterr().out
    assert "resume: lr 0.003 -> 0.0001 (applied to the restored optimizer)" in out
    assert "weight_decay 0.0 -> 0.05" in out and "max_steps 4 -> 8" in out
    factor = warmup_cosine(new.effective_warmup_steps, 8)(4)  # step 5's, 0-based 4
    step5 = next(r for r in result["history"] if r["step"] == 5)
    assert step5["lr"] == pytest.approx(1e-4 * factor, rel=1e-9)
    saved = load_checkpoint(result["checkpoint"])
    assert saved.train_config["lr"] == 1e-4 and saved.train_config["weight_decay"] == 0.05
    groups = saved.optimizer_state["param_groups"]
    assert all(g["weight_decay"] in (0.0, 0.05) for g in groups)
    assert any(g["weight_decay"] == 0.05 for g in groups)
    peaks = {g["initial_lr"] for g in groups}
    assert 1e-4 in peaks and not peaks & {3e-3, 0.02}  # nothing of the old run's lr is left


def test_resume_with_another_optimizer_is_refused_in_one_line(tmp_path, capsys):
    values = run_values(tmp_path / "run", str(tmp_path / "cache"), max_steps=3)
    assert cli_main(_argv(values)) == 0
    capsys.readouterr()
    code = cli_main(_argv({**values, "optimizer": "muon", "resume": True, "max_steps": 5}))
    _one_line(capsys, code, "optimizer='muon' (checkpoint: 'adamw')")


def test_resume_before_any_checkpoint_starts_fresh(tmp_path, cache_dir, capsys):
    result = trainer.train(run_config(tmp_path, cache_dir, max_steps=2, resume=True))
    assert result["steps"] == 2
    assert "no checkpoint in" in capsys.readouterr().out


# ---- SIGTERM ---------------------------------------------------------------------------------

def test_sigterm_saves_a_checkpoint_and_exits_143(tmp_path, monkeypatch, capsys):
    step = trainer._Run._train_step

    def train_step_then_sigterm(self, n):
        record = step(self, n)
        if n == 3:
            signal.raise_signal(signal.SIGTERM)
        return record

    monkeypatch.setattr(trainer._Run, "_train_step", train_step_then_sigterm)
    values = run_values(tmp_path / "run", str(tmp_path / "cache"), max_steps=50, save_steps=40)
    code = cli_main(_argv(values))
    err = capsys.readouterr().err
    assert code == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err
    assert latest_checkpoint(tmp_path / "run" / "checkpoints").name == "step_3"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


@pytest.mark.slow
def test_sigterm_to_an_accelerate_launch_saves_once_and_every_process_stops(tmp_path):
    """SIGTERM to the whole process group (what a scheduler sends) of `accelerate launch` with 2
    CPU processes: the ranks agree on the step, one checkpoint is saved, every process exits."""
    values = run_values(tmp_path / "run", str(tmp_path / "cache"), max_steps=100_000,
                        save_steps=100_000, batch_size=2)
    launcher = Path(sys.executable).with_name("accelerate")
    command = [str(launcher), "launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()),
               str(Path(__file__).with_name("cli_run.py")), *_argv(values)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = tmp_path / "run" / "log.csv"
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env, cwd=Path(__file__).parents[2],
                          start_new_session=True) as launch:
        deadline = time.monotonic() + 240
        while not (log.exists() and len(log.read_text().splitlines()) > 3):
            assert launch.poll() is None, launch.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "no training steps logged"
            time.sleep(0.2)
        os.killpg(launch.pid, signal.SIGTERM)
        _, err = launch.communicate(timeout=120)
    assert "stopped by SIGTERM" in err, err[-3000:]
    assert launch.returncode != 0
    saved = list_checkpoints(tmp_path / "run" / "checkpoints")
    assert len(saved) == 1, saved
    step = int(saved[0].name.removeprefix("step_"))
    assert step >= 3
    state = json.loads((saved[0] / "trainer_state.json").read_text())
    assert state["step"] == step
    assert load_checkpoint(saved[0]).step == step  # complete, checksums verified


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- one run per directory -------------------------------------------------------------------

def test_a_second_run_on_the_same_output_dir_is_refused(tmp_path, capsys):
    values = run_values(tmp_path / "run", str(tmp_path / "cache"), max_steps=3)
    with RunLock(tmp_path / "run"):  # the first run, still training
        code = cli_main(_argv(values))
    _one_line(capsys, code, "is in use by another training run", "pid ")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_dead_runs_lock_is_taken_over(tmp_path, cache_dir):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / LOCK_FILE).write_text("pid 999999 on elsewhere, since 2020-01-01\n")
    assert trainer.train(run_config(tmp_path / "run", cache_dir, max_steps=2))["steps"] == 2


def test_a_shared_checkpoint_dir_outside_the_output_dir_is_locked_too(tmp_path, cache_dir):
    shared = tmp_path / "shared-checkpoints"
    with RunLock(shared), pytest.raises(ConfigError, match="in use"):
        trainer.train(run_config(tmp_path / "run", cache_dir, checkpoint_dir=str(shared)))


# ---- divergence without NaN ------------------------------------------------------------------

def _fake_losses(monkeypatch, losses: dict[int, float]) -> None:
    """Train for real, but report the given loss for each step."""
    step = trainer._Run._train_step

    def reporting(self, n):
        return {**step(self, n), "loss": losses[n]}

    monkeypatch.setattr(trainer._Run, "_train_step", reporting)


def test_a_spike_without_recovery_stops_the_run_and_keeps_the_last_good_checkpoint(
        tmp_path, cache_dir, monkeypatch, capsys):
    healthy = {n: 3.0 - 0.01 * n for n in range(1, 41)}
    collapsed = {n: 1e6 if n == 41 else math.log(320) for n in range(41, 101)}
    _fake_losses(monkeypatch, {**healthy, **collapsed})
    cfg = run_config(tmp_path, cache_dir, max_steps=100, save_steps=5, keep_checkpoints=1,
                     divergence_patience=15, warmup_steps=2)
    with pytest.raises(TrainingDivergedError, match="stayed above") as caught:
        trainer.train(cfg)
    kept = [p.name for p in list_checkpoints(cfg.resolved_checkpoint_dir)]
    assert "step_40" in kept, kept  # the last checkpoint before the collapse survives pruning
    assert "step_40" in str(caught.value) and "(kept)" in str(caught.value)


def test_a_loss_stuck_at_uniform_output_after_warmup_stops_the_run(tmp_path, cache_dir,
                                                                   monkeypatch):
    _fake_losses(monkeypatch, dict.fromkeys(range(1, 81), math.log(257) + 0.1))
    cfg = run_config(tmp_path, cache_dir, max_steps=80, save_steps=100, warmup_steps=10,
                     divergence_patience=20)
    with pytest.raises(TrainingDivergedError, match="not learning"):
        trainer.train(cfg)


def test_the_watch_ignores_noise_and_a_recovered_spike():
    watch = LossWatch(patience=10, uniform_loss=math.log(257), warmup_steps=5)
    generator = torch.Generator().manual_seed(0)
    losses = [4.0 * math.exp(-n / 50) + 1.0 + 0.3 * torch.rand(1, generator=generator).item()
              for n in range(300)]
    losses[150:155] = [50.0] * 5  # a burst that recovers
    assert all(watch.update(n + 1, loss) is None for n, loss in enumerate(losses))
    assert watch.healthy and len(watch.recent) == WINDOW


def test_divergence_patience_zero_turns_the_check_off():
    watch = LossWatch(patience=0, uniform_loss=5.0, warmup_steps=0)
    assert all(watch.update(n, 1.0 if n < 30 else 1e6) is None for n in range(1, 200))


# ---- one line, not a traceback ---------------------------------------------------------------

def test_out_of_memory_is_one_line(tmp_path, monkeypatch, capsys):
    def out_of_memory(cfg):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:121] data. DefaultCPUAllocator: "
                           "can't allocate memory: you tried to allocate 1099511627776 bytes.")

    monkeypatch.setattr(trainer, "train", out_of_memory)
    code = cli_main(_argv(run_values(tmp_path, str(tmp_path / "cache"))))
    _one_line(capsys, code, "out of memory", "lower --batch_size")


@pytest.mark.parametrize("device,expected", [
    ("banana", "'banana' is not a torch device"),
    pytest.param("cuda", "no CUDA GPU is available here",
                  marks=pytest.mark.skipif(torch.cuda.is_available(), reason="has CUDA")),
])
def test_a_device_that_does_not_exist_is_one_line(tmp_path, capsys, device, expected):
    for command in (["generate", "--checkpoint", str(tmp_path), "--prompt", "hi"],
                    ["eval", "--checkpoint", str(tmp_path)]):
        _one_line(capsys, cli_main([*command, "--device", device]), expected)


def test_a_prompt_that_is_not_utf8_is_one_line_and_echoes_nothing(tmp_path, capsys):
    prompt = b"caf\xff".decode("utf-8", "surrogateescape")  # how Python receives such argv
    code = cli_main(["generate", "--checkpoint", str(tmp_path), "--prompt", prompt])
    captured = capsys.readouterr()
    assert captured.out == "" and code == 2 and "Traceback" not in captured.err
    assert captured.err.strip() == ("hololm generate: error: --prompt is not valid UTF-8 text "
                                    "(byte 0xff at character 3)")


def test_a_full_cache_dir_is_one_line(tmp_path, monkeypatch, capsys):
    from safetensors import SafetensorError

    from hololm.data import packing

    def full(*args, **kwargs):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                              'message: "No space left on device" })')

    monkeypatch.setattr(packing, "save_file", full)
    code = cli_main(_argv(run_values(tmp_path / "run", str(tmp_path / "cache"), max_steps=3)))
    _one_line(capsys, code, "cannot write the token cache", "No space left on device")
    assert not [p for p in (tmp_path / "cache").rglob("*.tmp")]


def test_resume_on_other_data_of_the_same_size_is_refused(tmp_path, cache_dir):
    data = tmp_path / "corpus.txt"
    data.write_text("the quick brown fox jumps over the lazy dog\n" * 400)
    cfg = run_values(tmp_path / "run", cache_dir, dataset=str(data), max_steps=3, save_steps=3)
    trainer.train(TrainConfig(**cfg))
    data.write_text("THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG\n" * 400)  # same length
    with pytest.raises(ConfigError, match="training data .* differs"):
        trainer.train(TrainConfig(**{**cfg, "max_steps": 5, "resume": True}))


def test_saving_over_a_symlinked_step_is_refused(tmp_path, cache_dir):
    elsewhere = tmp_path / "mine"
    elsewhere.mkdir()
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "step_2").symlink_to(elsewhere)
    with pytest.raises(CheckpointError, match="symbolic link"):
        trainer.train(run_config(tmp_path / "run", cache_dir, max_steps=2))
    assert (checkpoints / "step_2").is_symlink() and elsewhere.is_dir()


def test_an_unwritable_checkpoint_dir_fails_before_the_first_step(tmp_path, cache_dir,
                                                                  monkeypatch):
    """Found at start-up, not after a first stretch of training is lost at the first save."""
    steps = []
    monkeypatch.setattr(trainer._Run, "_train_step", lambda self, n: steps.append(n))
    blocker = tmp_path / "run" / "a-file"
    blocker.parent.mkdir()
    blocker.write_text("not a directory")
    with pytest.raises(CheckpointError, match="not writable"):
        trainer.train(run_config(tmp_path / "run", cache_dir,
                                 checkpoint_dir=str(blocker / "checkpoints")))
    assert steps == []
