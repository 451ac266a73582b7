"""A warmup that does not end before max_steps: the default is cut to a tenth of the run with a
warning (the learning rate then reaches --lr); the CLI refuses one the user gave."""

from __future__ import annotations

import pytest

from hololm.cli import main
from hololm.train import trainer
from hololm.train.config import TrainConfig

TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}


@pytest.mark.parametrize("warmup,max_steps,effective", [
    (100, 1000, 100), (100, 101, 100), (100, 100, 10), (100, 20, 2), (100, 5, 0), (7, 8, 7),
])
def test_effective_warmup(warmup, max_steps, effective):
    cfg = TrainConfig(warmup_steps=warmup, max_steps=max_steps)
    assert cfg.effective_warmup_steps == effective


def test_a_short_run_with_the_default_warmup_reaches_the_peak_lr(tmp_path, capsys):
    cfg = TrainConfig(model_overrides=TINY, seq_len=16, batch_size=2, max_steps=20, lr=1e-3,
                      eval_steps=100, eval_batches=1, sample_tokens=0, log_every=1,
                      max_train_tokens=20_000, max_eval_tokens=2_000, precision="fp32",
                      cache_dir=str(tmp_path / "cache"), output_dir=str(tmp_path / "run"))
    result = trainer.train(cfg)
    assert ("warning: warmup_steps=100 does not end before max_steps=20; warming up for 2 steps"
            in capsys.readouterr().out)
    lrs = [r["lr"] for r in result["history"]]
    assert lrs[:2] == pytest.approx([5e-4, 1e-3]) and max(lrs) == pytest.approx(1e-3)
    assert lrs[-1] < lrs[2]  # then the cosine decays


@pytest.mark.parametrize("where", ["flag", "config"])
def test_a_warmup_the_user_gave_that_outlasts_the_run_is_refused(where, tmp_path, capsys):
    argv = ["train", "--max_steps", "20", "--output_dir", str(tmp_path / "run")]
    if where == "flag":
        argv += ["--warmup_steps", "20"]
    else:
        (tmp_path / "run.yaml").write_text("warmup_steps: 20\n")
        argv += ["--config", str(tmp_path / "run.yaml")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("hololm train: error: warmup_steps=20 must be less than max_steps=20: "
                           "the learning rate would never reach --lr")
    assert not (tmp_path / "run").exists()
