"""The README's recipes run as written — for two steps of a tiny model on small local files in
each dataset's format (`--data_dir`), since the real runs need a GPU and the network. Later
flags win in argparse, so the small settings are appended to the README's own command."""

import json
import re
import shlex
from pathlib import Path

import pytest

from hololm.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def recipe_commands() -> list[str]:
    section = README.read_text().split("## Recipes", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^hololm train .*$", section, flags=re.M)


def write_local_copy(folder: Path) -> None:
    """train/validation jsonl files with a `text` field (wikitext, pg19 and slimpajama rows)."""
    folder.mkdir()
    for split, n in (("train", 40), ("validation", 4)):
        rows = [{"text": f" = Article {i} = \n the quick brown fox {i} jumps over the lazy dog .\n"
                 * 20} for i in range(n)]
        (folder / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))


def test_the_readme_has_the_three_seed_recipes():
    datasets = [re.search(r"--dataset (\S+)", c).group(1) for c in recipe_commands()]
    assert datasets == ["wikitext-103", "pg19", "slimpajama"]


@pytest.mark.parametrize("command", recipe_commands(), ids=lambda c: c.split("--dataset ")[1]
                         .split()[0])
def test_recipe_runs_on_small_local_data(command, tmp_path):
    data = tmp_path / "data"
    write_local_copy(data)
    small = ["--model_size", "tiny", "--model_overrides",
             '{"hidden_size": 64, "num_attention_heads": 2}', "--tokenizer", "byte",
             "--seq_len", "32", "--batch_size", "2", "--grad_accum_steps", "1",
             "--max_steps", "2", "--eval_steps", "2", "--eval_batches", "1", "--save_steps", "2",
             "--warmup_steps", "1", "--sample_tokens", "4", "--precision", "fp32",
             "--max_train_tokens", "20000", "--data_dir", str(data),
             "--output_dir", str(tmp_path / "out"), "--checkpoint_dir", str(tmp_path / "ckpt"),
             "--cache_dir", str(tmp_path / "cache")]
    argv = shlex.split(command)[1:] + small
    assert main(argv) == 0
    assert (tmp_path / "ckpt" / "step_2" / "model.safetensors").is_file()
