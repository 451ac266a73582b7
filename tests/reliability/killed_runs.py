"""Run by test_faults: train the config in argv[1] (JSON) once per scenario in argv[3:], each in a
forked child that SIGKILLs itself at the scenario's moment, with checkpoint_dir and output_dir
under <argv[2]>/<scenario>/. Writes <argv[2]>/status.json: scenario -> the child's exit
(a negative number: killed by that signal).

Scenarios (the save of step `KILL_STEP` unless said otherwise):
  model_write      half of model.safetensors written
  optimizer_write  half of optimizer.pt written
  before_rename    every file written and flushed, the temp dir not yet renamed
  prune            the new checkpoint in place, the old one half deleted
  mid_step         during the forward pass of the step after KILL_STEP
  timer<N>         after N milliseconds, whatever the run is doing
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import torch
import transformers.modeling_utils

from hololm.train import checkpoint, trainer
from hololm.train.config import TrainConfig

KILL_STEP = 4


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _saving(path) -> bool:
    return f".tmp-step_{KILL_STEP}-" in str(path)


def _install(scenario: str) -> None:
    if scenario == "model_write":
        real = transformers.modeling_utils.safe_save_file

        def half_model(tensors, filename, metadata=None):
            real(tensors, filename, metadata=metadata)
            if _saving(filename):
                size = os.path.getsize(filename)
                os.truncate(filename, size // 2)
                _die()

        transformers.modeling_utils.safe_save_file = half_model
    elif scenario == "optimizer_write":
        real_save = torch.save

        def half_save(obj, f, *args, **kwargs):
            if not (_saving(f) and str(f).endswith(checkpoint.OPTIMIZER_FILE)):
                return real_save(obj, f, *args, **kwargs)
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            with open(f, "wb") as out:
                out.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            _die()

        torch.save = half_save
    elif scenario == "before_rename":
        real_replace = os.replace

        def replace(src, dst):
            if _saving(src):
                _die()
            real_replace(src, dst)

        os.replace = replace
    elif scenario == "prune":
        real_rmtree = shutil.rmtree

        def rmtree(path, *args, **kwargs):
            path = Path(path)
            if (path / checkpoint.STATE_FILE).is_file() and f"step_{KILL_STEP}" not in path.name:
                (path / checkpoint.MODEL_FILE).unlink()
                _die()
            real_rmtree(path, *args, **kwargs)

        checkpoint.shutil.rmtree = rmtree
    elif scenario == "mid_step":
        real_loss = trainer.token_loss
        calls = [0]

        def token_loss(model, batch, device, eos_token_id=None):
            if torch.is_grad_enabled():
                calls[0] += 1
                if calls[0] == KILL_STEP + 1:
                    _die()
            return real_loss(model, batch, device, eos_token_id)

        trainer.token_loss = token_loss
    elif not scenario.startswith("timer"):
        raise SystemExit(f"unknown scenario {scenario}")


def main() -> None:
    values = json.loads(Path(sys.argv[1]).read_text())
    root = Path(sys.argv[2])
    status = {}
    for scenario in sys.argv[3:]:
        out = root / scenario
        cfg = TrainConfig.from_dict({**values, "output_dir": str(out),
                                     "checkpoint_dir": str(out / "checkpoints")})
        pid = os.fork()
        if pid == 0:
            _install(scenario)
            code = 1
            try:
                trainer.train(cfg)
                code = 0
            finally:
                os._exit(code)
        if scenario.startswith("timer"):
            time.sleep(int(scenario[5:]) / 1000)
            os.kill(pid, signal.SIGKILL)
        _, code = os.waitpid(pid, 0)
        status[scenario] = os.waitstatus_to_exitcode(code)
    (root / "status.json").write_text(json.dumps(status))


if __name__ == "__main__":
    main()
