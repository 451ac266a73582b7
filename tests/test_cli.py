"""The command line: every --help, one-line user errors with non-zero exit, and the
train → generate → eval → resume flow on the embedded corpus (offline)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hololm.cli import build_parser, main

HOLOLM = [sys.executable, "-m", "hololm.cli"]


@pytest.mark.parametrize("argv", [[], ["train"], ["eval"], ["generate"], ["bench"]])
def test_every_help_explains_every_flag(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "usage: hololm" in text
    parser = build_parser()
    sub = parser if not argv else parser._subparsers._group_actions[0].choices[argv[0]]
    for action in sub._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"{action.option_strings} has no help"


@pytest.mark.parametrize("argv,message", [
    (["train", "--model_type", "rwkv"], "model_type='rwkv' is not one of"),
    (["train", "--model_size", "huge"], "model_size='huge' is not one of"),
    (["train", "--dataset", "no-such-corpus", "--max_steps", "1"], "unknown dataset"),
    (["generate", "--checkpoint", "/nonexistent/run"], "does not exist"),
    (["eval", "--checkpoint", "/nonexistent/run"], "does not exist"),
])
def test_user_errors_are_one_line_and_exit_2(argv, message, capsys, tmp_path):
    if argv[0] == "train":
        argv = [*argv, "--output_dir", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_corrupt_checkpoint_is_refused(tmp_path, capsys):
    step = tmp_path / "step_5"
    step.mkdir()
    (step / "config.json").write_text("{not json")
    assert main(["generate", "--checkpoint", str(step), "--prompt", "x"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_train_generate_eval_resume_offline(tmp_path):
    out = tmp_path / "run"
    common = ["--model_type", "long", "--model_size", "tiny", "--dataset", "stdlib",
              "--tokenizer", "byte", "--seq_len", "64", "--batch_size", "2",
              "--model_overrides", '{"hidden_size": 64, "num_attention_heads": 2}',
              "--eval_steps", "4", "--eval_batches", "2", "--sample_tokens", "8",
              "--cache_dir", str(tmp_path / "cache"), "--output_dir", str(out)]
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}

    def run(*argv: str) -> subprocess.CompletedProcess:
        done = subprocess.run([*HOLOLM, *argv], capture_output=True, text=True, env=env,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return done

    run("train", *common, "--max_steps", "6")
    assert (out / "checkpoints" / "step_6" / "model.safetensors").is_file()
    assert (out / "log.csv").is_file() and (out / "loss.png").is_file()
    gen = run("generate", "--checkpoint", str(out), "--prompt", "def ", "--max_new_tokens", "12",
              "--seed", "1")
    assert gen.stdout.startswith("def ") and "tokens/s" in gen.stderr
    ev = run("eval", "--checkpoint", str(out), "--dataset", "stdlib", "--context_lengths", "32",
             "64", "--max_windows", "2", "--output_dir", str(out / "eval"))
    assert "| 64 |" in ev.stdout and (out / "eval" / "perplexity.png").is_file()
    run("train", *common, "--max_steps", "8", "--resume")
    assert (out / "checkpoints" / "step_8").is_dir()


def test_cli_starts_without_importing_datasets():
    """`datasets` loads only when a hub dataset or a local table is read: the CLI's --help and
    the benchmarks start without it (and run on machines that lack it)."""
    code = ("import sys, hololm.cli, hololm.bench.speed, hololm.train.trainer; "
            "sys.exit('datasets' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize("argv", [["--help"], ["generate", "--help"], ["eval", "--help"],
                                  ["bench", "--help"]])
def test_help_imports_neither_torch_nor_transformers(argv):
    """The `hololm` console script: its --help starts in a fraction of a second. Python's own
    import log (PYTHONPROFILEIMPORTTIME) lists every module it imported."""
    script = Path(sys.executable).with_name("hololm")
    if not script.is_file():
        pytest.skip("the hololm console script is not installed next to this python")
    done = subprocess.run([str(script), *argv], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"})
    assert done.returncode == 0 and "usage: hololm" in done.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:")}
    assert "hololm.cli" in imported
    assert not imported & {"torch", "transformers"}


def test_import_hololm_registers_the_families_in_a_fresh_process():
    code = ("import hololm\n"
            "from transformers import AutoConfig, AutoModelForCausalLM\n"
            "config = AutoConfig.for_model('long', hidden_size=32, num_hidden_layers=1, "
            "num_attention_heads=2, vocab_size=64)\n"
            "assert type(AutoModelForCausalLM.from_config(config)) is hololm.LongForCausalLM\n"
            "assert {'HoloConfig', 'ops', 'holo_scan'} <= set(dir(hololm))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("bug", [ValueError, TypeError, RuntimeError])
def test_a_bug_shows_its_traceback(bug):
    """Only hololm's own errors (and OSErrors about paths) are user errors, printed in one line;
    any other exception from a subcommand is a bug, shown with its traceback, exit status 1."""
    code = ("import sys, hololm.cli as cli\n"
            "def broken(args):\n"
            f"    raise {bug.__name__}('internal')\n"
            "cli.COMMANDS['generate'] = broken\n"
            "sys.exit(cli.main(['generate', '--checkpoint', 'x']))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 1
    assert "Traceback" in done.stderr and f"{bug.__name__}: internal" in done.stderr


@pytest.mark.parametrize("argv,message", [
    (["generate", "--checkpoint", "x", "--temperature", "-1"], "-1 must be >= 0"),
    (["generate", "--checkpoint", "x", "--top_p", "1.5"], "1.5 must be in (0, 1]"),
    (["eval", "--checkpoint", "x", "--context_lengths", "0"], "0 must be at least 1"),
    (["eval", "--checkpoint", "x", "--max_windows", "many"], "'many' is not int"),
])
def test_bad_numbers_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
