"""End-to-end training on CPU with the real data pipeline (the offline "stdlib" corpus, byte
tokens): the loss falls, logs and checkpoints appear, an interrupted and resumed run equals an
uninterrupted one exactly, and two processes under accelerate keep identical replicas."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hololm.data.tokenizers import byte_tokenizer
from hololm.errors import CheckpointError, ConfigError
from hololm.models.presets import build_model
from hololm.optim import build_optimizer
from hololm.train import trainer
from hololm.train.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from hololm.train.config import TrainConfig
from hololm.train.schedule import build_scheduler

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """These models are too small to gain from intra-op threads, and on a busy machine the
    spinning worker threads slow the steps down many times over."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """One token cache for the module: the corpus is tokenized once."""
    return str(tmp_path_factory.mktemp("token-cache"))


def _config(tmp_path: Path, cache_dir: str, **changes) -> TrainConfig:
    values = {"model_type": "long", "model_size": "tiny", "model_overrides": TINY,
              "seq_len": 64, "batch_size": 8, "max_steps": 6, "lr": 3e-3, "warmup_steps": 2,
              "eval_steps": 3, "eval_batches": 2, "save_steps": 3, "log_every": 1,
              "sample_tokens": 8, "dataset": "stdlib", "tokenizer": "byte",
              "max_train_tokens": 100_000, "max_eval_tokens": 10_000, "cache_dir": cache_dir,
              "output_dir": str(tmp_path), "precision": "fp32", **changes}
    return TrainConfig(**values)


def test_loss_falls_and_logs_are_written(tmp_path, cache_dir):
    cfg = _config(tmp_path, cache_dir, model_overrides={**TINY, "hidden_size": 64},
                  max_steps=40, warmup_steps=5, eval_steps=20, save_steps=20, log_every=10,
                  keep_checkpoints=1, gradient_checkpointing=True, sample_prompt="def ")
    result = trainer.train(cfg)
    losses = [r["loss"] for r in result["history"]]
    assert len(losses) == 40 and result["steps"] == 40
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.5, losses
    assert 0 < result["val_bpb"] < 8 and result["val_ppl"] > 1
    assert result["checkpoint"] == str(tmp_path / "checkpoints" / "step_40")
    assert [p.name for p in list_checkpoints(cfg.resolved_checkpoint_dir)] == ["step_40"]
    with open(tmp_path / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["10", "20", "30", "40"]
    assert rows[1]["val_bpb"] and not rows[0]["val_bpb"] and float(rows[0]["tokens_per_s"]) > 0
    assert (tmp_path / "loss.png").stat().st_size > 1000
    samples = (tmp_path / "samples.txt").read_text()
    assert samples.count("=== step") == 2 and samples.startswith("=== step 20\ndef ")


def test_document_resets_reach_the_model_unless_turned_off(tmp_path, cache_dir, monkeypatch):
    """Training and evaluation windows carry the packed documents' positions to the model."""
    seen = []
    real = trainer.document_positions

    def positions(input_ids, eos_token_id):
        seen.append(eos_token_id)
        return real(input_ids, eos_token_id)

    monkeypatch.setattr(trainer, "document_positions", positions)
    short = {"max_steps": 2, "warmup_steps": 1, "eval_steps": 2, "save_steps": 2,
             "sample_tokens": 0}
    on = trainer.train(_config(tmp_path / "on", cache_dir, **short))
    assert len(seen) == 2 + 2 and set(seen) == {byte_tokenizer().eos_token_id}
    seen.clear()
    off = trainer.train(_config(tmp_path / "off", cache_dir, document_resets=False, **short))
    assert not seen
    assert on["history"][0]["loss"] == off["history"][0]["loss"]  # no boundary in these windows
    # a window holding a boundary: the document after it is read alone
    model = on["model"]
    eos = byte_tokenizer().eos_token_id
    ids = torch.randint(0, 256, (1, 32), generator=torch.Generator().manual_seed(0))
    ids[0, 15] = eos
    batch = {"input_ids": ids, "labels": ids}
    apart, _ = trainer.token_loss(model, batch, torch.device("cpu"), eos)
    across, _ = trainer.token_loss(model, batch, torch.device("cpu"))
    alone, _ = trainer.token_loss(model, {"input_ids": ids[:, 16:], "labels": ids[:, 16:]},
                                  torch.device("cpu"))
    first, _ = trainer.token_loss(model, {"input_ids": ids[:, :17], "labels": ids[:, :17]},
                                  torch.device("cpu"))
    assert apart != across
    torch.testing.assert_close(apart, first + alone)


@pytest.mark.parametrize("carry", [False, True], ids=["fresh-windows", "carry-state"])
def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path, cache_dir, monkeypatch,
                                                         carry):
    """Ctrl-C at step 4 saves step_4; resuming reproduces steps 5-6 bit for bit (with gradient
    accumulation, evaluations and samples in between; with --carry_state, from the states the
    checkpoint kept)."""
    changes = {"grad_accum_steps": 2, "optimizer": "muon", "carry_state": carry}
    whole = trainer.train(_config(tmp_path / "whole", cache_dir, **changes))

    step = trainer._Run._train_step

    def train_step_then_ctrl_c(self, n):
        record = step(self, n)
        if n == 4:
            signal.raise_signal(signal.SIGINT)
        return record

    cfg = _config(tmp_path / "split", cache_dir, **changes)
    monkeypatch.setattr(trainer._Run, "_train_step", train_step_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(cfg)
    monkeypatch.undo()
    assert latest_checkpoint(cfg.resolved_checkpoint_dir).name == "step_4"
    resumed = trainer.train(_config(tmp_path / "split", cache_dir, resume=True, **changes))

    assert [r["loss"] for r in resumed["history"]] == [r["loss"] for r in whole["history"]]
    assert [r["val_loss"] for r in resumed["history"] if "val_loss" in r] == \
        [r["val_loss"] for r in whole["history"] if "val_loss" in r]
    a, b = (load_checkpoint(r["checkpoint"]).model_state for r in (whole, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)
    with open(tmp_path / "split" / "log.csv", newline="") as f:
        assert [r["step"] for r in csv.DictReader(f)] == ["1", "2", "3", "4", "5", "6"]
    carried = load_checkpoint(tmp_path / "split" / "checkpoints" / "step_4").carried_states
    if carry:  # both micro-batch slots, every layer's memory and the next positions
        assert {"rank0.slot0.next_position", "rank0.slot1.next_position"} <= set(carried)
        assert any(k.startswith("rank0.slot1.layer1.") for k in carried)
    else:
        assert carried is None


def test_resume_refuses_a_missing_named_or_mismatched_checkpoint(tmp_path, cache_dir):
    cfg = _config(tmp_path, cache_dir, resume=True)
    with pytest.raises(CheckpointError, match="does not exist"):  # a named one must exist
        trainer.train(_config(tmp_path, cache_dir, resume=str(tmp_path / "nowhere")))
    model = build_model("long", "tiny", vocab_size=320, seq_len=64, **TINY)
    optimizer = build_optimizer(model, "adamw")
    save_checkpoint(cfg.resolved_checkpoint_dir, model, byte_tokenizer(), optimizer,
                    build_scheduler(optimizer, 1, 2), {}, 1, {**cfg.to_dict(), "seq_len": 128})
    with pytest.raises(ConfigError, match=r"seq_len=64 \(checkpoint: 128\)"):
        trainer.train(cfg)


def test_model_override_the_model_refuses_is_a_config_error(tmp_path, cache_dir):
    cfg = _config(tmp_path, cache_dir, model_overrides={**TINY, "mlp_type": "nope"})
    with pytest.raises(ConfigError, match="long-tiny with model_overrides.*unknown mlp_type"):
        trainer.train(cfg)


@pytest.mark.parametrize("carry", [False, True], ids=["fresh-windows", "carry-state"])
def test_two_processes_keep_identical_replicas(tmp_path, cache_dir, carry):
    """`accelerate launch` with 2 CPU processes: the replicas end equal, and since each rank
    reads its own half of the batch (with --carry_state: its half of the streams, carrying its
    own rows' memories), the losses match one process with twice the batch."""
    cfg = _config(tmp_path / "ddp", cache_dir, batch_size=4, eval_steps=100, sample_tokens=0,
                  carry_state=carry)
    config_file = tmp_path / "ddp.json"
    config_file.write_text(json.dumps(cfg.to_dict()))
    launcher = Path(sys.executable).with_name("accelerate")
    command = [str(launcher), "launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()),
               str(Path(__file__).with_name("distributed_run.py")), str(config_file),
               str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["sha256"] == ranks[1]["sha256"]
    assert ranks[0]["losses"] == ranks[1]["losses"]
    if carry:  # the main process saves every process's carried states
        saved = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "step_6").carried_states
        assert {"rank0.slot0.next_position", "rank1.slot0.next_position"} <= set(saved)

    single = trainer.train(_config(tmp_path / "single", cache_dir, batch_size=8,
                                   eval_steps=100, sample_tokens=0, carry_state=carry))
    expected = [r["loss"] for r in single["history"]]
    assert ranks[0]["losses"] == pytest.approx(expected, rel=1e-4)
    assert ranks[0]["val_loss"] == pytest.approx(single["val_loss"], rel=1e-4)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
