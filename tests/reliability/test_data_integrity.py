"""The data a run trains on is the data the user gave, or the run refuses to start.

Attacks (each fails against a loader that trusts file metadata or types):
- a dataset replaced by other bytes of the same size, its mtime restored (`cp -p`, rsync,
  os.utime): the token cache must not serve the old tokens, and the dataset fingerprint a
  checkpoint records must change (while a moved, unchanged dataset keeps it);
- random bytes or NULs saved as .txt / .jsonl: refused with the file and the byte offset of the
  first invalid UTF-8 sequence, also when that sequence straddles two read blocks;
- a jsonl whose `text` is a number, null or a list: refused with the file, line and type;
- YAML / JSON config files that give a key twice: refused with the key and its line.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from hololm.data import corpora, packing
from hololm.data.bpe import train_bpe
from hololm.data.corpora import load_documents
from hololm.data.packing import load_token_data
from hololm.data.tokenizers import byte_tokenizer
from hololm.errors import ConfigError, DatasetUnavailableError
from hololm.train.config import TrainConfig, read_settings
from tests.data.helpers import write_jsonl


@pytest.fixture(scope="module")
def byte_tok():
    return byte_tokenizer()


def replace_keeping_stat(path: Path, content: str) -> None:
    """Rewrite `path` with `content` of the same size and put its mtime back."""
    stat = path.stat()
    assert len(content.encode()) == stat.st_size
    path.write_text(content)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_mtime_ns == stat.st_mtime_ns


def text_lines(word: str) -> str:
    return "".join(f"{word} {i}\n" for i in range(100))


def one_line_error(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# --- 1. the token cache is keyed on content ------------------------------------------------


@pytest.mark.parametrize("layout", ["file", "folder"])
def test_token_cache_sees_a_same_size_same_mtime_replacement(tmp_path, byte_tok, layout):
    if layout == "file":
        target = dataset = tmp_path / "corpus.txt"
    else:
        dataset = tmp_path / "corpus"
        dataset.mkdir()
        (dataset / "a.txt").write_text(text_lines("other"))
        target = dataset / "b.txt"
    target.write_text(text_lines("alpha"))
    first = load_token_data(str(dataset), "train", byte_tok, cache_dir=tmp_path / "cache")
    replace_keeping_stat(target, text_lines("omega"))
    second = load_token_data(str(dataset), "train", byte_tok, cache_dir=tmp_path / "cache")
    text = bytes(second.tokens[second.tokens < 256].to(torch.uint8).tolist())
    assert b"omega" in text and b"alpha" not in text
    assert len(second) == len(first)  # same size: only the content tells them apart


# --- 2. the dataset fingerprint for resume checks --------------------------------------------


def test_dataset_fingerprint_follows_content_not_metadata_or_place(tmp_path, byte_tok):
    path = tmp_path / "corpus.txt"
    path.write_text(text_lines("alpha"))
    before = packing.dataset_fingerprint(str(path), byte_tok)
    assert packing.dataset_fingerprint(str(path), byte_tok) == before
    moved = tmp_path / "elsewhere" / "corpus.txt"
    moved.parent.mkdir()
    shutil.copy(path, moved)
    assert packing.dataset_fingerprint(str(moved), byte_tok) == before  # a moved copy resumes
    replace_keeping_stat(path, text_lines("omega"))
    assert packing.dataset_fingerprint(str(path), byte_tok) != before
    bpe = train_bpe([text_lines("alpha")], 300, tmp_path / "bpe")
    # the same text tokenized otherwise is another token stream
    assert packing.dataset_fingerprint(str(moved), bpe) != before


# --- 3. text files must be UTF-8 text --------------------------------------------------------


@pytest.mark.parametrize("block_size", [1 << 20, 3])
def test_invalid_utf8_is_refused_with_its_byte_offset(tmp_path, monkeypatch, block_size):
    monkeypatch.setattr(corpora, "BLOCK_SIZE", block_size)
    valid = "naïve line\n".encode() * 10  # 2-byte characters: a block may cut one in two
    # a 3-byte sequence cut short, followed by random bytes, or by the end of the file
    for name, tail in (("random.txt", b"\xe2\x82(" + os.urandom(4000)), ("cut.txt", b"\xe2\x82")):
        txt = tmp_path / name
        txt.write_bytes(valid + tail)
        with pytest.raises(DatasetUnavailableError) as err:
            load_documents(str(txt))
        message = one_line_error(err)
        assert str(txt) in message and f"byte offset {len(valid)}" in message
    rows = b'{"text": "fine"}\n' * 5
    jsonl = tmp_path / "latin1.jsonl"
    jsonl.write_bytes(rows + '{"text": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(DatasetUnavailableError) as err:
        load_documents(str(jsonl))
    message = one_line_error(err)
    assert str(jsonl) in message and f"byte offset {len(rows) + 13}" in message


def test_control_character_files_are_refused(tmp_path):
    nul = tmp_path / "zeros.txt"
    nul.write_bytes(b"\x00" * 5000 + b"\n\n")  # valid UTF-8, but no text
    with pytest.raises(DatasetUnavailableError, match="zeros.txt.*control") as err:
        load_documents(str(nul))
    one_line_error(err)


def test_valid_text_files_still_load(tmp_path, monkeypatch):
    monkeypatch.setattr(corpora, "BLOCK_SIZE", 3)
    path = tmp_path / "multilingual.txt"
    lines = [f"日本語 naïve\ttext, ünïcode {i}\n" for i in range(100)]
    path.write_text("".join(lines))
    assert list(load_documents(str(path))) == ["".join(lines[:98])]
    jsonl = write_jsonl(tmp_path / "ok.jsonl", [{"text": f"résumé {i}"} for i in range(60)])
    assert len(list(load_documents(str(jsonl)))) + len(
        list(load_documents(str(jsonl), "validation"))) == 60


# --- 4. jsonl fields of the wrong type -------------------------------------------------------


@pytest.mark.parametrize(("value", "kind", "blank_lines"), [
    (5, "int", 0), (2.5, "float", 0), (["a", "b"], "list", 0), (None, "null", 0),
    (None, "null", 2),  # blank lines hold no row but count as lines
])
def test_a_non_string_text_field_names_file_line_and_type(tmp_path, value, kind, blank_lines):
    lines = [json.dumps({"text": f"row {i}"}) for i in range(60)]
    lines[42 - blank_lines] = json.dumps({"text": value})
    lines[10:10] = [""] * blank_lines
    path = tmp_path / "typed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetUnavailableError) as err:
        list(load_documents(str(path))) + list(load_documents(str(path), "validation"))
    message = one_line_error(err)
    assert str(path) in message and "line 43" in message and f"is {kind}," in message


@pytest.fixture
def alpaca_rows() -> list[dict]:
    # outputs that do not look like numbers: datasets' fallback json reader (pandas) would read
    # "2" as 2 once one row's type differs from the others'
    return [{"instruction": f"Add {i} and 1.", "input": "", "output": f"it is {i + 1}"}
            for i in range(60)]


def test_a_non_string_alpaca_field_is_refused(tmp_path, alpaca_rows):
    alpaca_rows[7]["output"] = 8
    path = write_jsonl(tmp_path / "alpaca.jsonl", alpaca_rows)
    with pytest.raises(DatasetUnavailableError, match=r"alpaca.jsonl.*line 8.*'output'.*int"):
        list(load_documents(str(path))) + list(load_documents(str(path), "validation"))


# --- 5. config files that give a key twice ---------------------------------------------------


@pytest.mark.parametrize(("name", "text"), [
    ("c.yaml", "lr: 0.001\nmax_steps: 10\nlr: 0.1\n"),
    ("c.yml", "model_overrides:\n  dim: 64\n  dim: 128\n"),
    ("c.json", '{\n  "lr": 0.001,\n  "lr": 0.1\n}\n'),
    ("n.json", '{\n  "model_overrides": {"dim": 64,\n    "dim": 128}\n}\n'),
])
def test_config_files_refuse_a_key_given_twice(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    key = "dim" if "dim" in text else "lr"
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_file(path)
    message = one_line_error(err)
    assert str(path) in message and repr(key) in message and "line 3" in message  # the second


def test_yaml_merge_keys_may_still_override(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text("base: &base\n  dim: 64\n  depth: 2\nmodel_overrides:\n  <<: *base\n"
                    "  dim: 128\n")
    assert read_settings(path)["model_overrides"] == {"dim": 128, "depth": 2}
