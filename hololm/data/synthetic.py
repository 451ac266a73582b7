"""Synthetic recall and reasoning tasks: deterministic seeded generators for the recall benchmark.

Every generator returns a `TaskData` whose `targets` are aligned with `inputs`: `targets[:, t]` is
what the model should output *at* position t (having read inputs[:, :t+1]), -100 where nothing is
scored. The same (arguments, seed) always gives the same examples; `split_seeds` derives disjoint
train / validation / test seeds from one base seed.

- `mqar`: multi-query associative recall as defined by zoology (Arora et al., 2023): key–value
  pairs up front (keys from the lower half of the vocabulary, values from the upper half), then
  each key queried once at a gap drawn from p(g) ∝ g^(power_a − 1); other positions are random
  tokens when `random_non_queries`.
- `mqar_forget`: keys are re-assigned new values while the context is written; a query must
  return the latest value (a memory that cannot overwrite fails it).
- `passkey`: a digit passkey hidden at a random depth in random filler, asked for at the end.
- `reverse`, `sort`, `copy`: x, separator, f(x).
- `induction`: a trigger token followed by a random token somewhere in noise; at the end the
  trigger again: answer the token that followed it.
- `vector_recall`: continuous key → value pairs then queries, scored by mean squared error
  (values ~ N(0, 1), so predicting zero scores 1.0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

IGNORE = -100


@dataclass
class TaskData:
    """inputs [N, T] int64 (or [N, T, F] float32 for vector tasks); targets [N, T] int64 with
    IGNORE where unscored (or [N, T, F] float32 with `mask` [N, T] bool)."""

    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor | None = None
    slices: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def scored(self) -> torch.Tensor:
        """[N, T] bool: positions that carry a target."""
        return self.mask if self.mask is not None else self.targets != IGNORE


def split_seeds(seed: int) -> dict[str, int]:
    """Distinct generator seeds for the train, validation and test sets of one base seed."""
    return {"train": 3 * seed, "validation": 3 * seed + 1, "test": 3 * seed + 2}


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _choose_distinct(rng: np.random.Generator, low: int, high: int, n: int, k: int) -> np.ndarray:
    """[n, k] rows of k distinct integers from [low, high), in random order."""
    out = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, 1024):  # row blocks bound the [rows, high - low] scratch
        scores = rng.random((min(1024, n - start), high - low))
        picked = np.argpartition(scores, k - 1, axis=1)[:, :k]
        order = np.argsort(np.take_along_axis(scores, picked, axis=1), axis=1)
        out[start:start + len(scores)] = np.take_along_axis(picked, order, axis=1) + low
    return out


def _query_gaps(rng: np.random.Generator, n: int, space: int, k: int, power_a: float
                ) -> np.ndarray:
    """[n, k] distinct slots in [0, space) drawn without replacement with p(g) ∝ (g+1)^(a−1),
    zoology's power law that puts most queries close to the context."""
    weights = power_a * np.arange(1, space + 1, dtype=np.float64) ** (power_a - 1)
    # Gumbel top-k = sampling k slots without replacement in proportion to `weights`
    keys = np.log(weights) - np.log(-np.log(rng.random((n, space))))
    return np.argsort(-keys, axis=1)[:, :k]


def _pack(contexts: np.ndarray, keys: np.ndarray, values: np.ndarray, seq_len: int,
          vocab_size: int, power_a: float, random_non_queries: bool | str,
          rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Context tokens, then each key queried once at a power-law gap; the value is the target at
    the query's position. Filler that repeats one of the example's keys is redrawn when
    `random_non_queries == "no_keys"`."""
    n, context_len = contexts.shape
    space = (seq_len - context_len) // 2
    slots = _query_gaps(rng, n, space, keys.shape[1], power_a)
    inputs = np.zeros((n, seq_len), dtype=np.int64)
    inputs[:, :context_len] = contexts
    targets = np.full((n, seq_len), IGNORE, dtype=np.int64)
    positions = context_len + 2 * slots  # queries on even offsets, never adjacent
    np.put_along_axis(inputs, positions, keys, axis=1)
    np.put_along_axis(targets, positions, values, axis=1)
    if random_non_queries:
        filler = rng.integers(0, vocab_size, size=inputs.shape)
        while random_non_queries == "no_keys" and (
                clash := (filler[:, :, None] == keys[:, None, :]).any(-1)).any():
            filler[clash] = rng.integers(0, vocab_size, size=int(clash.sum()))
        inputs = np.where(inputs == 0, filler, inputs)
    return torch.from_numpy(inputs), torch.from_numpy(targets)


def mqar(num_examples: int, seq_len: int, num_kv_pairs: int, vocab_size: int = 8192,
         seed: int = 0, power_a: float = 0.01, random_non_queries: bool | str = True
         ) -> TaskData:
    """Zoology's multi-query associative recall: `k1 v1 … kN vN`, then each key once more at a
    power-law gap; the target at a repeated key is its value. The gaps hold random tokens
    (`random_non_queries` True, zoology's default), zeros (False), or random tokens other than
    the example's keys ("no_keys": in a small vocabulary a filler copy of a key before its query
    gives it a second, wrong successor in a few % of queries, a ceiling under 99 % for every
    model; at zoology's 8192 tokens it is rare)."""
    _check(num_kv_pairs >= 1, f"num_kv_pairs must be >= 1, got {num_kv_pairs}")
    _check(seq_len % 2 == 0, f"seq_len must be even, got {seq_len}")
    _check(4 * num_kv_pairs <= seq_len, f"seq_len ({seq_len}) must be >= 4 * num_kv_pairs "
           f"({num_kv_pairs})")
    _check(vocab_size > seq_len, f"vocab_size ({vocab_size}) must exceed seq_len ({seq_len})")
    _check(vocab_size // 2 - 1 >= num_kv_pairs, f"vocab_size ({vocab_size}) too small for "
           f"{num_kv_pairs} distinct keys")
    rng = np.random.default_rng(seed)
    half = vocab_size // 2
    keys = _choose_distinct(rng, 1, half, num_examples, num_kv_pairs)  # 0 marks non-queries
    values = _choose_distinct(rng, half, vocab_size, num_examples, num_kv_pairs)
    contexts = np.stack([keys, values], axis=2).reshape(num_examples, 2 * num_kv_pairs)
    inputs, targets = _pack(contexts, keys, values, seq_len, vocab_size, power_a,
                            random_non_queries, rng)
    return TaskData(inputs, targets, slices={"seq_len": seq_len, "num_kv_pairs": num_kv_pairs})


def mqar_forget(num_examples: int, seq_len: int, num_kv_pairs: int, num_updates: int | None = None,
                vocab_size: int = 8192, seed: int = 0, power_a: float = 0.01,
                random_non_queries: bool = True) -> TaskData:
    """MQAR whose context writes `num_kv_pairs` keys and then re-assigns `num_updates` of them
    (random ones, possibly the same key twice) to new values, the writes shuffled so updates land
    anywhere after a key's first write. Each key is queried once; the target is its latest value."""
    num_updates = num_kv_pairs if num_updates is None else num_updates
    _check(num_kv_pairs >= 1, f"num_kv_pairs must be >= 1, got {num_kv_pairs}")
    _check(num_updates >= 0, f"num_updates must be >= 0, got {num_updates}")
    writes = num_kv_pairs + num_updates
    _check(seq_len % 2 == 0, f"seq_len must be even, got {seq_len}")
    _check(2 * writes + 2 * num_kv_pairs <= seq_len, f"seq_len ({seq_len}) must be >= 2 * "
           f"(2 * num_kv_pairs + num_updates) = {2 * (writes + num_kv_pairs)}")
    _check(vocab_size > seq_len, f"vocab_size ({vocab_size}) must exceed seq_len ({seq_len})")
    _check(vocab_size // 2 - 1 >= num_kv_pairs, f"vocab_size ({vocab_size}) too small for "
           f"{num_kv_pairs} distinct keys")
    rng = np.random.default_rng(seed)
    half = vocab_size // 2
    keys = _choose_distinct(rng, 1, half, num_examples, num_kv_pairs)
    # write order: every key once (its first write), then updates of random keys
    which = np.concatenate([np.tile(np.arange(num_kv_pairs), (num_examples, 1)),
                            rng.integers(0, num_kv_pairs, (num_examples, num_updates))], axis=1)
    which = np.take_along_axis(which, np.argsort(rng.random(which.shape), axis=1), axis=1)
    # a new value on every write, different from the key's current one
    write_values = np.empty_like(which)
    latest = np.zeros_like(keys)
    rows = np.arange(num_examples)
    for w in range(writes):
        slot = which[:, w]
        value = rng.integers(half, vocab_size - 1, num_examples)
        value = np.where(value >= latest[rows, slot], value + 1, value)  # skip the current value
        write_values[:, w] = latest[rows, slot] = value
    contexts = np.stack([np.take_along_axis(keys, which, axis=1), write_values], axis=2)
    inputs, targets = _pack(contexts.reshape(num_examples, 2 * writes), keys, latest, seq_len,
                            vocab_size, power_a, random_non_queries, rng)
    return TaskData(inputs, targets, slices={"seq_len": seq_len, "num_kv_pairs": num_kv_pairs,
                                             "num_updates": num_updates})


PASSKEY_MARK, PASSKEY_QUERY, PASSKEY_FILLER = 10, 11, 12  # digits are tokens 0–9


def passkey(num_examples: int, seq_len: int, passkey_len: int = 4, vocab_size: int = 64,
            seed: int = 0) -> TaskData:
    """Random filler tokens with `MARK d1 … dk` at a uniformly random depth, ending with
    `QUERY d1 … dk`: the targets are the k digits, predicted from QUERY on."""
    _check(vocab_size > PASSKEY_FILLER, f"vocab_size must be > {PASSKEY_FILLER}, got "
           f"{vocab_size}")
    _check(seq_len >= 2 * (passkey_len + 1) + 1, f"seq_len ({seq_len}) too short for a "
           f"{passkey_len}-digit passkey")
    rng = np.random.default_rng(seed)
    inputs = rng.integers(PASSKEY_FILLER, vocab_size, (num_examples, seq_len))
    digits = rng.integers(0, 10, (num_examples, passkey_len))
    answer_start = seq_len - passkey_len - 1  # position of QUERY
    depth = rng.integers(0, answer_start - passkey_len, num_examples)  # needle start
    rows = np.arange(num_examples)[:, None]
    inputs[rows[:, 0], depth] = PASSKEY_MARK
    inputs[rows, depth[:, None] + 1 + np.arange(passkey_len)] = digits
    inputs[:, answer_start] = PASSKEY_QUERY
    inputs[:, answer_start + 1:] = digits
    targets = np.full_like(inputs, IGNORE)
    targets[:, answer_start:answer_start + passkey_len] = digits
    return TaskData(torch.from_numpy(inputs), torch.from_numpy(targets),
                    slices={"seq_len": seq_len, "passkey_len": passkey_len})


SEPARATOR = 1  # sequence tasks draw their symbols from [2, vocab_size)


def _transduction(num_examples: int, seq_len: int, vocab_size: int, seed: int, transform
                  ) -> TaskData:
    _check(seq_len >= 3 and seq_len % 2 == 1, f"seq_len must be odd and >= 3 (x, separator, "
           f"f(x)), got {seq_len}")
    _check(vocab_size >= 3, f"vocab_size must be >= 3, got {vocab_size}")
    n = (seq_len - 1) // 2
    rng = np.random.default_rng(seed)
    x = rng.integers(SEPARATOR + 1, vocab_size, (num_examples, n))
    y = transform(x)
    inputs = np.concatenate([x, np.full((num_examples, 1), SEPARATOR), y], axis=1)
    targets = np.full_like(inputs, IGNORE)
    targets[:, n:2 * n] = y  # the separator predicts y1, y_i predicts y_{i+1}
    return TaskData(torch.from_numpy(inputs), torch.from_numpy(targets),
                    slices={"seq_len": seq_len})


def reverse(num_examples: int, seq_len: int, vocab_size: int = 64, seed: int = 0) -> TaskData:
    """`x1 … xn SEP xn … x1`; seq_len = 2n + 1."""
    return _transduction(num_examples, seq_len, vocab_size, seed, lambda x: x[:, ::-1])


def sort(num_examples: int, seq_len: int, vocab_size: int = 64, seed: int = 0) -> TaskData:
    """`x1 … xn SEP sorted(x)`; seq_len = 2n + 1."""
    return _transduction(num_examples, seq_len, vocab_size, seed, lambda x: np.sort(x, axis=1))


def copy(num_examples: int, seq_len: int, vocab_size: int = 64, seed: int = 0) -> TaskData:
    """`x1 … xn SEP x1 … xn`; seq_len = 2n + 1."""
    return _transduction(num_examples, seq_len, vocab_size, seed, lambda x: x)


INDUCTION_TRIGGER = 1


def induction(num_examples: int, seq_len: int, vocab_size: int = 64, seed: int = 0) -> TaskData:
    """Noise with `TRIGGER a` at a random position and TRIGGER again at the end: the target at
    the last position is `a` (an induction head: find the earlier occurrence, copy its
    successor)."""
    _check(seq_len >= 4, f"seq_len must be >= 4, got {seq_len}")
    _check(vocab_size >= 3, f"vocab_size must be >= 3, got {vocab_size}")
    rng = np.random.default_rng(seed)
    inputs = rng.integers(INDUCTION_TRIGGER + 1, vocab_size, (num_examples, seq_len))
    where = rng.integers(0, seq_len - 2, num_examples)
    rows = np.arange(num_examples)
    inputs[rows, where] = INDUCTION_TRIGGER
    inputs[:, -1] = INDUCTION_TRIGGER
    targets = np.full_like(inputs, IGNORE)
    targets[:, -1] = inputs[rows, where + 1]
    return TaskData(torch.from_numpy(inputs), torch.from_numpy(targets),
                    slices={"seq_len": seq_len})


def vector_recall(num_examples: int, num_pairs: int, num_queries: int | None = None,
                  key_dim: int = 16, value_dim: int = 16, seed: int = 0) -> TaskData:
    """Holo-Transformer's continuous associative recall. Tokens are [key, value, is_query] vectors:
    `num_pairs` writes (key_i, value_i, 0), then `num_queries` reads (key_j, 0, 1) of random
    stored keys; the target of a read is value_j. Keys are random unit vectors scaled to norm
    sqrt(key_dim), values ~ N(0, I): predicting zero scores an MSE of 1."""
    num_queries = num_pairs if num_queries is None else num_queries
    _check(num_pairs >= 1 and num_queries >= 1, "num_pairs and num_queries must be >= 1")
    rng = np.random.default_rng(seed)
    keys = rng.standard_normal((num_examples, num_pairs, key_dim))
    keys *= np.sqrt(key_dim) / np.linalg.norm(keys, axis=-1, keepdims=True)
    values = rng.standard_normal((num_examples, num_pairs, value_dim))
    asked = rng.integers(0, num_pairs, (num_examples, num_queries))
    seq_len = num_pairs + num_queries
    inputs = np.zeros((num_examples, seq_len, key_dim + value_dim + 1), dtype=np.float32)
    inputs[:, :num_pairs, :key_dim] = keys
    inputs[:, :num_pairs, key_dim:-1] = values
    inputs[:, num_pairs:, :key_dim] = np.take_along_axis(keys, asked[..., None], axis=1)
    inputs[:, num_pairs:, -1] = 1.0
    targets = np.zeros((num_examples, seq_len, value_dim), dtype=np.float32)
    targets[:, num_pairs:] = np.take_along_axis(values, asked[..., None], axis=1)
    mask = np.zeros((num_examples, seq_len), dtype=bool)
    mask[:, num_pairs:] = True
    return TaskData(torch.from_numpy(inputs), torch.from_numpy(targets), torch.from_numpy(mask),
                    slices={"seq_len": seq_len, "num_kv_pairs": num_pairs})
