"""Run by test_trainer under `accelerate launch`: train the config in argv[1] (JSON), then write
this process's parameter checksum and loss history to <argv[2]>/rank<R>.json."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from accelerate import PartialState

from hololm.train.config import TrainConfig
from hololm.train.trainer import train

if __name__ == "__main__":
    result = train(TrainConfig.from_file(sys.argv[1]))
    digest = hashlib.sha256()
    for name, tensor in sorted(result["model"].state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    state = PartialState()
    out = {"world_size": state.num_processes, "sha256": digest.hexdigest(),
           "losses": [r["loss"] for r in result["history"]], "val_loss": result["val_loss"]}
    (Path(sys.argv[2]) / f"rank{state.process_index}.json").write_text(json.dumps(out))
