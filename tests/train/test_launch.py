"""Several processes through `accelerate launch`, as the README documents it: the documented CPU
command really starts two ranks, and the launches that would not train as asked are refused in
one line instead of crashing inside accelerate or running one process (or plain DDP) silently."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

TINY = '{"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}'


def _launch(tmp_path: Path, *launch_flags: str) -> subprocess.CompletedProcess:
    """`accelerate launch FLAGS -m hololm.cli train` of a tiny 3-step run."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [str(Path(sys.executable).with_name("accelerate")), "launch", *launch_flags,
               "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(port), "-m", "hololm.cli", "train",
               "--model_type", "long", "--model_overrides", TINY, "--seq_len", "16",
               "--batch_size", "2", "--max_steps", "3", "--warmup_steps", "1",
               "--eval_steps", "100", "--eval_batches", "1", "--sample_tokens", "0",
               "--max_train_tokens", "20000", "--max_eval_tokens", "2000",
               "--precision", "fp32", "--cache_dir", str(tmp_path / "cache"),
               "--output_dir", str(tmp_path / "run")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)


@pytest.fixture(autouse=True)
def _needs_a_cpu_machine():
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the launches on a machine without GPUs")


def test_the_documented_cpu_command_runs_two_ranks(tmp_path):
    done = _launch(tmp_path, "--multi_gpu", "--num_processes", "2", "--num_machines", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 processes (MULTI_CPU over gloo)" in done.stdout
    assert done.stdout.count("done: 3 steps") == 1  # printed by the main process only
    assert (tmp_path / "run" / "checkpoints" / "step_3").is_dir()


@pytest.mark.parametrize("flags,reason", [
    (("--cpu", "--num_processes", "2"), "accelerate launch --cpu with several processes "
                                        "started only this one"),
    (("--use_fsdp", "--fsdp_version", "2", "--num_processes", "2", "--num_machines", "1"),
     "accelerate launch --use_fsdp is not supported"),
])
def test_launches_that_would_not_train_as_asked_are_refused(flags, reason, tmp_path):
    done = _launch(tmp_path, *flags)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.startswith("hololm train: ")]
    assert lines and all(reason in line for line in lines), done.stderr[-3000:]
    assert not (tmp_path / "run" / "checkpoints").exists()
