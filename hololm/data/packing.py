"""Documents → one flat token stream for training, and the batches read from it.

`tokenize_documents` packs documents into a flat int32 tensor with the end-of-text token after
each document (and a loss mask when some documents are (prompt, response) pairs: loss on the
response and its EOS only); `load_token_data` does so for a named corpus split and caches the
result as `<cache_dir>/tokens/<hash>.safetensors`, the hash covering the corpus (its files'
content, or its hub repository), the split, the whole tokenizer and `max_tokens`.
`dataset_fingerprint` names the token stream a run trains on, for a checkpoint to record.

`BatchSampler` cuts the stream into non-overlapping windows of `seq_len` tokens, visited in a
fresh random order (and offset) each epoch. Batch `step` of rank `r` is a pure function of
(seed, step, r, world size): the sampler's state is its step counter, so a resumed run reads
exactly the batches an uninterrupted run would, and ranks read disjoint windows.
`eval_batches` reads fixed, evenly spread, non-overlapping windows of held-out data.
`document_positions` gives a window's tokens their positions in their documents, which tell a
hololm model where packed documents begin (`position_ids`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerFast

from hololm.data.cache import resolve_cache_dir, stable_hash
from hololm.data.corpora import Document, corpus_fingerprint, load_documents
from hololm.data.tokenizers import byte_fingerprint, tokenizer_fingerprint
from hololm.errors import ConfigError, DatasetUnavailableError

IGNORE_INDEX = -100  # label of tokens outside the loss, as HF models expect
CHUNK_CHARS = 1 << 22  # text encoded per batch call: large enough for the Rust threads
FORMAT_VERSION = 1  # bump when the packing changes, to retire old cache entries


@dataclass
class TokenData:
    tokens: torch.Tensor  # [N] int32
    loss_mask: torch.Tensor | None  # [N] bool, True where the token is a target; None: all are
    n_documents: int
    n_bytes: int  # UTF-8 bytes of the text behind the tokens, for bits per byte

    def __len__(self) -> int:
        return self.tokens.numel()

    @property
    def bytes_per_token(self) -> float:
        """Bits per byte = loss (nats per token) / (ln 2 · bytes_per_token)."""
        return self.n_bytes / len(self)

    def save(self, path: Path) -> None:
        """Written under a temporary name and renamed: a reader never sees a partial file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tensors = {"tokens": self.tokens}
        if self.loss_mask is not None:
            tensors["loss_mask"] = self.loss_mask
        try:
            save_file(tensors, str(tmp), metadata={"n_documents": str(self.n_documents),
                                                   "n_bytes": str(self.n_bytes)})
            os.replace(tmp, path)
        except (OSError, SafetensorError) as err:  # safetensors wraps a full disk in its own
            tmp.unlink(missing_ok=True)
            reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
            raise DatasetUnavailableError(f"cannot write the token cache {path} ({reason}); "
                                          f"free space there or pass another --cache_dir"
                                          ) from None

    @classmethod
    def load(cls, path: Path) -> TokenData:
        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata()
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        return cls(tensors["tokens"], tensors.get("loss_mask"), int(metadata["n_documents"]),
                   int(metadata["n_bytes"]))


def load_token_data(dataset: str, split: str, tokenizer: PreTrainedTokenizerFast, *,
                    data_dir: str | None = None, streaming: bool = False,
                    max_tokens: int | None = None,
                    cache_dir: str | os.PathLike | None = None) -> TokenData:
    """`tokenize_documents(load_documents(dataset, split, ...))`, cached: a second call with the
    same corpus, split, tokenizer and max_tokens reads the cache and never opens the corpus."""
    key = ("corpus", dataset, split, corpus_fingerprint(dataset, data_dir))
    return _cached(key, tokenizer, max_tokens, cache_dir, lambda: _tokenize(
        load_documents(dataset, split, data_dir=data_dir, streaming=streaming), tokenizer,
        max_tokens))


def dataset_fingerprint(dataset: str, tokenizer: PreTrainedTokenizerFast, *,
                        data_dir: str | None = None) -> str:
    """Identity of the tokens `load_token_data(dataset, ..., data_dir=data_dir)` packs, for a
    checkpoint to record and a resumed run to compare: the corpus's content
    (`corpus_fingerprint`: every local file's bytes, the repository of a hub dataset read from
    the hub), the whole tokenizer and the packing format. Where the corpus lies does not count,
    so a moved copy resumes; other bytes of the same size and mtime do not."""
    return stable_hash("dataset", FORMAT_VERSION, corpus_fingerprint(dataset, data_dir),
                       tokenizer_fingerprint(tokenizer))


def tokenize_documents(documents: Iterable[Document], tokenizer: PreTrainedTokenizerFast,
                       max_tokens: int | None = None, *,
                       cache_dir: str | os.PathLike | None = None,
                       cache_key: str | None = None) -> TokenData:
    """Pack `documents` as [doc₀ EOS doc₁ EOS ...], cut at `max_tokens` (documents past it are
    not read). Literal "<|endoftext|>" inside a text stays text: only packing inserts EOS.
    With `cache_key` (naming the documents), the result is cached under `cache_dir`."""
    if cache_key is None:
        return _tokenize(documents, tokenizer, max_tokens)
    return _cached(("documents", cache_key), tokenizer, max_tokens, cache_dir,
                   lambda: _tokenize(documents, tokenizer, max_tokens))


def _cached(key: tuple, tokenizer: PreTrainedTokenizerFast, max_tokens: int | None,
            cache_dir: str | os.PathLike | None, build: Callable[[], TokenData]) -> TokenData:
    name = stable_hash(FORMAT_VERSION, key, tokenizer_fingerprint(tokenizer), max_tokens)
    path = resolve_cache_dir(cache_dir) / "tokens" / f"{name}.safetensors"
    if path.is_file():
        try:
            return TokenData.load(path)
        except (OSError, KeyError, ValueError, SafetensorError):
            pass  # a damaged entry (disk full, killed copy): rebuild it
    data = build()
    data.save(path)
    return data


def _tokenize(documents: Iterable[Document], tokenizer: PreTrainedTokenizerFast,
              max_tokens: int | None) -> TokenData:
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ConfigError(f"tokenizer {tokenizer.name_or_path!r} has no end-of-text token")
    if max_tokens is not None and max_tokens < 1:
        raise ConfigError(f"max_tokens must be positive, got {max_tokens}")
    pieces: list[np.ndarray] = []
    prompt_lengths: list[int] = []  # per document: tokens outside the loss at its start
    n_tokens = n_bytes = 0
    for prompt, text, size in _encoded_documents(documents, _encoder(tokenizer)):
        ids = np.concatenate([prompt, text, [eos]]).astype(np.int32)
        pieces.append(ids)
        prompt_lengths.append(len(prompt))
        n_tokens += len(ids)
        n_bytes += size
        if max_tokens is not None and n_tokens >= max_tokens:
            break
    if not pieces:
        raise DatasetUnavailableError("no documents to tokenize: the corpus split is empty")
    if max_tokens is not None and n_tokens > max_tokens:
        last = pieces[-1]
        keep = len(last) - (n_tokens - max_tokens)
        dropped = tokenizer.decode(last[keep:].tolist(), skip_special_tokens=True)
        n_bytes -= len(dropped.encode())
        pieces[-1] = last[:keep]
        prompt_lengths[-1] = min(prompt_lengths[-1], keep)
    tokens = torch.from_numpy(np.concatenate(pieces))
    return TokenData(tokens, _loss_mask(pieces, prompt_lengths), len(pieces), n_bytes)


def _loss_mask(pieces: list[np.ndarray], prompt_lengths: list[int]) -> torch.Tensor | None:
    if not any(prompt_lengths):
        return None
    lengths = np.array([len(ids) for ids in pieces])
    prompts = np.array(prompt_lengths)
    runs = np.stack([prompts, lengths - prompts], axis=1).ravel()  # masked, counted, masked, ...
    flags = np.tile([False, True], len(pieces))
    return torch.from_numpy(np.repeat(flags, runs))


def _texts(doc: Document) -> tuple[str, ...]:
    return (doc,) if isinstance(doc, str) else doc


def _encoded_documents(documents: Iterable[Document],
                       encode: Callable[[list[str]], list[np.ndarray]],
                       ) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """(prompt ids, text or response ids, UTF-8 bytes) of each document; texts are encoded a
    chunk of documents at a time, and no further than the consumer reads."""
    no_prompt = np.empty(0, np.int32)
    for chunk in _chunks(documents):
        encoded = iter(encode([text for doc in chunk for text in _texts(doc)]))
        for doc in chunk:
            prompt = next(encoded) if isinstance(doc, tuple) else no_prompt
            yield prompt, next(encoded), sum(len(text.encode()) for text in _texts(doc))


def _chunks(documents: Iterable[Document]) -> Iterator[list[Document]]:
    chunk: list[Document] = []
    size = 0
    for doc in documents:
        chunk.append(doc)
        size += sum(map(len, _texts(doc)))
        if size >= CHUNK_CHARS:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _encoder(tokenizer: PreTrainedTokenizerFast) -> Callable[[list[str]], list[np.ndarray]]:
    """texts → token id arrays, without special tokens (a literal "<|endoftext|>" in the text is
    encoded as text). The byte tokenizer's ids are the UTF-8 bytes: read them directly."""
    if tokenizer_fingerprint(tokenizer) == byte_fingerprint():
        return lambda texts: [np.frombuffer(text.encode(), np.uint8).astype(np.int32)
                              for text in texts]
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())  # a copy to configure
    backend.encode_special_tokens = True

    def encode(texts: list[str]) -> list[np.ndarray]:
        return [np.asarray(enc.ids, np.int32)
                for enc in backend.encode_batch(texts, add_special_tokens=False)]
    return encode


class BatchSampler:
    """Deterministic training batches `{"input_ids", "labels"}` of shape [batch_size, seq_len]
    (labels = input_ids, IGNORE_INDEX outside the loss mask; the model shifts them).

    Epoch e visits all W = len(data) // seq_len windows at offsets shift_e + k·seq_len in an
    order permuted by a generator seeded from (seed, e); sample i of the run is window i mod W
    of epoch i // W, and step s of rank r takes samples ((s·world_size + r)·B ...) + B - 1."""

    def __init__(self, data: TokenData, seq_len: int, batch_size: int, seed: int, *,
                 rank: int = 0, world_size: int = 1) -> None:
        if seq_len < 2 or batch_size < 1:
            raise ConfigError(f"need seq_len >= 2 and batch_size >= 1, got {seq_len}, {batch_size}")
        if len(data) < seq_len:
            raise ConfigError(f"the training data has {len(data)} tokens, fewer than seq_len "
                              f"{seq_len}")
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is outside world size {world_size}")
        self.data, self.seq_len, self.batch_size, self.seed = data, seq_len, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.n_windows = len(data) // seq_len
        self.step = 0
        self._orders: dict[int, tuple[int, torch.Tensor]] = {}  # the epochs last read

    @property
    def epoch(self) -> float:
        """Epochs of data consumed by all ranks together."""
        return self.step * self.world_size * self.batch_size / self.n_windows

    def __iter__(self) -> BatchSampler:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        batch = self.batch_for_rank(self.step, self.rank, self.world_size)
        self.step += 1  # the state now names the next batch to read
        return batch

    def batch_for_rank(self, step: int, rank: int, world_size: int) -> dict[str, torch.Tensor]:
        first = (step * world_size + rank) * self.batch_size
        samples = torch.arange(first, first + self.batch_size)
        epochs = samples.div(self.n_windows, rounding_mode="floor")
        starts = torch.empty_like(samples)
        for epoch in epochs.unique().tolist():
            in_epoch = epochs == epoch
            shift, order = self._epoch_order(epoch)
            starts[in_epoch] = shift + order[samples[in_epoch] % self.n_windows] * self.seq_len
        return _windows(self.data, starts, self.seq_len)

    def _epoch_order(self, epoch: int) -> tuple[int, torch.Tensor]:
        """(offset of the first window, order of the windows) of `epoch`."""
        if epoch not in self._orders:
            seed = int(stable_hash("epoch", self.seed, epoch)[:16], 16)
            generator = torch.Generator().manual_seed(seed)
            slack = len(self.data) - self.n_windows * self.seq_len
            shift = int(torch.randint(slack + 1, (), generator=generator))
            if len(self._orders) >= 2:  # a batch spans at most two epochs
                self._orders.clear()
            self._orders[epoch] = shift, torch.randperm(self.n_windows, generator=generator)
        return self._orders[epoch]

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step, "seed": self.seed, "seq_len": self.seq_len,
                "batch_size": self.batch_size, "world_size": self.world_size,
                "n_tokens": len(self.data)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Refuses a state from a run with other data or batch geometry: its batches would not
        continue that run."""
        self.step = _resumed_step(self.state_dict(), state)


class StreamSampler:
    """Training batches for a run that carries each row's memory into its next window
    (`--carry_state`): `{"input_ids", "labels", "continues", "offset"}`, [batch_size, seq_len],
    [batch_size] bool (the window follows the row's previous one) and [batch_size] long (tokens
    of the lane read before this window).

    The stream is cut into world_size · grad_accum_steps · batch_size contiguous lanes of equal
    length; micro-batch i of rank r reads, in row b, window i // grad_accum_steps of lane
    ((r · grad_accum_steps + i mod grad_accum_steps) · batch_size + b), so consecutive steps
    give each row consecutive windows of one lane and a model trains over documents far longer
    than seq_len. A lane read to its end starts over (`continues` False: drop the carried
    state). As with `BatchSampler`, the state is the micro-batch counter alone."""

    def __init__(self, data: TokenData, seq_len: int, batch_size: int, grad_accum_steps: int,
                 *, rank: int = 0, world_size: int = 1) -> None:
        if seq_len < 2 or batch_size < 1 or grad_accum_steps < 1:
            raise ConfigError(f"need seq_len >= 2, batch_size >= 1 and grad_accum_steps >= 1, "
                              f"got {seq_len}, {batch_size}, {grad_accum_steps}")
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is outside world size {world_size}")
        self.data, self.seq_len, self.batch_size = data, seq_len, batch_size
        self.grad_accum_steps, self.rank, self.world_size = grad_accum_steps, rank, world_size
        lanes = world_size * grad_accum_steps * batch_size
        self.lane_length = len(data) // lanes
        self.n_windows = self.lane_length // seq_len  # per lane
        if self.n_windows < 1:
            raise ConfigError(f"--carry_state cuts the {len(data)} training tokens into {lanes} "
                              f"streams (processes x grad_accum_steps x batch_size), each "
                              f"shorter than seq_len {seq_len}: use more data or fewer streams")
        self.step = 0

    @property
    def epoch(self) -> float:
        """Passes over the lanes made so far (every micro-batch reads one window per lane)."""
        return self.step / self.grad_accum_steps / self.n_windows

    def __iter__(self) -> StreamSampler:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        batch = self.batch_for_rank(self.step, self.rank)
        self.step += 1
        return batch

    def batch_for_rank(self, step: int, rank: int) -> dict[str, torch.Tensor]:
        micro, window = step % self.grad_accum_steps, step // self.grad_accum_steps
        first_lane = (rank * self.grad_accum_steps + micro) * self.batch_size
        lanes = torch.arange(first_lane, first_lane + self.batch_size)
        starts = lanes * self.lane_length + (window % self.n_windows) * self.seq_len
        batch = _windows(self.data, starts, self.seq_len)
        batch["continues"] = torch.full((self.batch_size,), window % self.n_windows != 0)
        batch["offset"] = torch.full((self.batch_size,), window % self.n_windows * self.seq_len)
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step, "seq_len": self.seq_len, "batch_size": self.batch_size,
                "grad_accum_steps": self.grad_accum_steps, "world_size": self.world_size,
                "n_tokens": len(self.data), "carry_state": True}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Refuses a state from a run with other data, batch geometry or sampler: its windows
        would not continue that run's streams."""
        self.step = _resumed_step(self.state_dict(), state)


def _resumed_step(current: dict, saved: dict) -> int:
    """The step a sampler resumes at from its `saved` state, refused (ConfigError) where any
    other entry differs from the `current` one: another sampler's state (a key it lacks reads as
    None) or other data or geometry would not continue the saved run's batches."""
    changed = [f"{key} {saved.get(key)} -> {current[key]}" for key in current
               if key != "step" and saved.get(key) != current[key]]
    if changed:
        raise ConfigError(f"cannot resume the data order exactly: {', '.join(changed)}")
    return int(saved["step"])


def eval_batches(data: TokenData, seq_len: int, batch_size: int,
                 max_batches: int | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of non-overlapping `seq_len` windows of `data`, the same on every call: all of
    them, or `max_batches · batch_size` spread evenly over the data (the last batch may be
    smaller)."""
    n_windows = len(data) // seq_len
    if n_windows == 0:
        raise ConfigError(f"the validation data has {len(data)} tokens, fewer than seq_len "
                          f"{seq_len}")
    count = n_windows if max_batches is None else min(n_windows, max_batches * batch_size)
    starts = torch.arange(count) * n_windows // count * seq_len
    for first in range(0, count, batch_size):
        yield _windows(data, starts[first:first + batch_size], seq_len)


def _windows(data: TokenData, starts: torch.Tensor, seq_len: int) -> dict[str, torch.Tensor]:
    index = starts[:, None] + torch.arange(seq_len)
    input_ids = data.tokens[index].long()
    labels = input_ids.clone()
    if data.loss_mask is not None:
        labels[~data.loss_mask[index]] = IGNORE_INDEX
    return {"input_ids": input_ids, "labels": labels}


def document_positions(input_ids: torch.Tensor, eos_token_id: int,
                       first: torch.Tensor | None = None) -> torch.Tensor:
    """[B, T] long: each token's position in its document of the packed stream, as Hugging
    Face's packed sequences give them to a model (`position_ids`): 0 on the token after an
    end-of-text, counting up by one elsewhere. A window's first token is 0 (it starts what the
    model sees), or, with `first` [B] long, continues its document at that position (a window
    that carries the previous window's state; 0 there is a document start too)."""
    B, T = input_ids.shape
    index = torch.arange(T, device=input_ids.device).expand(B, T)
    starts = torch.zeros(B, T, dtype=torch.bool, device=input_ids.device)
    starts[:, 1:] = input_ids[:, :-1] == eos_token_id
    starts[:, 0] = True if first is None else first == 0
    last = torch.where(starts, index, -1).cummax(1).values  # [B, T]: the latest start so far
    if first is None:
        return index - last
    return torch.where(last < 0, index + first.to(index.device)[:, None], index - last)
