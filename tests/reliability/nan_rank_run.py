"""Run by test_faults under `accelerate launch`: train the config in argv[1] (JSON) with a NaN
loss on rank 1 only at step 3, then write this process's skipped steps and a weight digest
after every step to <argv[2]>/rank<R>.json."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch
from accelerate import PartialState

from hololm.train import trainer
from hololm.train.config import TrainConfig

POISONED_STEP = 3


def main() -> None:
    rank = int(os.environ.get("RANK", "0"))  # PartialState() now would set up the wrong backend
    real_loss, real_step = trainer.token_loss, trainer._Run._train_step
    current = [0]
    digests = {}

    def token_loss(model, batch, device, eos_token_id=None):
        loss_sum, count = real_loss(model, batch, device, eos_token_id)
        if torch.is_grad_enabled() and rank == 1 and current[0] == POISONED_STEP:
            loss_sum = loss_sum * float("nan")
        return loss_sum, count

    def train_step(self, step):
        current[0] = step
        record = real_step(self, step)
        digest = hashlib.sha256()
        for name, tensor in sorted(self.accelerator.unwrap_model(self.model).state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        digests[step] = digest.hexdigest()
        return record

    trainer.token_loss, trainer._Run._train_step = token_loss, train_step
    result = trainer.train(TrainConfig.from_file(sys.argv[1]))
    out = {"skipped": [r["step"] for r in result["history"] if r.get("skipped")],
           "digests": digests}
    (Path(sys.argv[2]) / f"rank{PartialState().process_index}.json").write_text(json.dumps(out))


if __name__ == "__main__":
    main()
