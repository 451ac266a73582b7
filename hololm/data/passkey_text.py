"""Passkey retrieval as text (Mohtashami & Jaggi, "Landmark Attention", 2023): a pass key hidden
at a random depth in repeated filler sentences, asked for at the end, for language models that
read a corpus of such documents (`write_corpus`) and are then scored on longer ones
(hololm/eval/passkey.py):

    The grass is green. The sky is blue. [...] The pass key is 68213. Remember it. 68213 is the
    pass key. [...] There and back again. What is the pass key? The pass key is 68213.

The filler carries no information, so all a model has to remember across it is the key. The
filler is cut to the character on both sides of the needle, so that every text of a length has
exactly that length (texts of one length batch together). Texts are ASCII: one character is one
byte token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hololm.errors import ConfigError

FILLER = ("The grass is green. The sky is blue. The sun is yellow. Here we go. "
          "There and back again. ")
NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key. "
QUESTION = "What is the pass key? The pass key is "
DIGITS = 5  # of a key, unless asked otherwise


@dataclass(frozen=True)
class PasskeyText:
    text: str
    key: str
    answer_start: int  # character where the key's answer begins (after QUESTION)


def shortest(digits: int) -> int:
    """The shortest text with a `digits`-digit key: needle, question, key and the final stop."""
    return len(NEEDLE.format(key="0" * digits)) + len(QUESTION) + digits + 1


def passkey_text(length: int, key: str, depth: float) -> PasskeyText:
    """A text of exactly `length` characters: filler cut to length around the needle, the
    needle starting at fraction `depth` ∈ [0, 1] of the filler, then QUESTION, key, ".". """
    if not (key.isascii() and key.isdigit()):
        raise ConfigError(f"the pass key must be digits, got {key!r}")
    if not 0 <= depth <= 1:
        raise ConfigError(f"depth must lie in [0, 1], got {depth}")
    if length < shortest(len(key)):
        raise ConfigError(f"a {len(key)}-digit passkey text needs at least "
                          f"{shortest(len(key))} characters, got length={length}")
    filler = length - shortest(len(key))
    before = round(depth * filler)
    repeated = FILLER * (filler // len(FILLER) + 1)
    text = (repeated[:before] + NEEDLE.format(key=key) + repeated[:filler - before] + QUESTION
            + key + ".")
    return PasskeyText(text, key, length - len(key) - 1)


def sample(count: int, length: int, digits: int = DIGITS, seed: int = 0) -> list[PasskeyText]:
    """`count` texts of `length` characters: random keys, depths spread evenly over [0, 1]
    (the first at 0, the last at 1) so every depth is tested."""
    if count < 1 or digits < 1:
        raise ConfigError(f"count and digits must be at least 1, got {count} and {digits}")
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, 10, (count, digits))
    depths = np.linspace(0, 1, count)  # one text: depth 0
    return [passkey_text(length, "".join(map(str, k)), float(d))
            for k, d in zip(keys, depths, strict=True)]


def write_corpus(folder: str | Path, count: int, min_length: int, max_length: int,
                 digits: int = DIGITS, seed: int = 0) -> Path:
    """`count` training texts as doc-NNNNNN.txt in `folder` (a corpus hololm's trainer reads,
    one document per file), lengths log-uniform in [min_length, max_length], random keys and
    depths. Rewritten identically for the same arguments; earlier doc-*.txt files go."""
    if min_length < shortest(digits) or max_length < min_length:
        raise ConfigError(f"lengths must satisfy {shortest(digits)} <= min_length <= max_length, "
                          f"got {min_length} and {max_length}")
    rng = np.random.default_rng(seed)
    lengths = np.exp(rng.uniform(math.log(min_length), math.log(max_length + 1), count))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("doc-*.txt"):  # an earlier, larger corpus's: the trainer reads all
        stale.unlink()
    for i, length in enumerate(lengths.astype(int)):
        key = "".join(map(str, rng.integers(0, 10, digits)))
        text = passkey_text(int(length), key, float(rng.uniform())).text
        (folder / f"doc-{i:06d}.txt").write_text(text, encoding="ascii")
    return folder
