"""Passkey texts: exact lengths, the key where the question asks for it, the needle at the
depth asked, and a training corpus that is the same for the same seed."""

import pytest

from hololm.data import passkey_text
from hololm.errors import ConfigError


@pytest.mark.parametrize("depth", [0.0, 0.37, 1.0])
@pytest.mark.parametrize("length", [passkey_text.shortest(5), 300, 4097])
def test_text_has_the_length_and_the_key_at_the_end(length, depth):
    sample = passkey_text.passkey_text(length, "68213", depth)
    text = sample.text
    assert len(text) == len(text.encode()) == length
    assert text[sample.answer_start:] == "68213."
    assert text[:sample.answer_start].endswith(passkey_text.QUESTION)
    needle = passkey_text.NEEDLE.format(key="68213")
    assert text.count(needle) == 1 and text.count("68213") == 3
    filler = length - passkey_text.shortest(5)
    assert text.index(needle) == round(depth * filler)


def test_samples_spread_depths_and_draw_keys():
    samples = passkey_text.sample(5, 500, digits=4, seed=3)
    needles = [s.text.index("The pass key is") for s in samples]
    assert needles[0] == 0 and needles == sorted(needles) and len(set(needles)) == 5
    assert all(len(s.key) == 4 and s.key.isdigit() for s in samples)
    assert len({s.key for s in samples}) > 1
    assert [s.text for s in passkey_text.sample(5, 500, digits=4, seed=3)] == \
        [s.text for s in samples]


def test_corpus_is_reproducible_and_within_the_lengths(tmp_path):
    a = passkey_text.write_corpus(tmp_path / "a", 40, 120, 900, seed=1)
    b = passkey_text.write_corpus(tmp_path / "b", 40, 120, 900, seed=1)
    texts = [p.read_text() for p in sorted(a.glob("*.txt"))]
    assert texts == [p.read_text() for p in sorted(b.glob("*.txt"))]
    assert len(texts) == 40 and all(120 <= len(t) <= 900 for t in texts)
    assert max(len(t) for t in texts) > 3 * min(len(t) for t in texts)  # log-uniform spread
    (a / "notes.txt").write_text("kept")
    passkey_text.write_corpus(a, 10, 120, 900, seed=1)  # a smaller corpus in the same folder
    assert sorted(p.name for p in a.glob("*.txt")) == [
        *(f"doc-{i:06d}.txt" for i in range(10)), "notes.txt"]


@pytest.mark.parametrize("call, match", [
    (lambda: passkey_text.passkey_text(50, "12345", 0.5), "at least 103 characters"),
    (lambda: passkey_text.passkey_text(500, "12a45", 0.5), "must be digits"),
    (lambda: passkey_text.passkey_text(500, "12345", 1.5), r"depth must lie in \[0, 1\]"),
    (lambda: passkey_text.write_corpus("unused", 3, 50, 100), "min_length <= max_length"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ConfigError, match=match):
        call()


def test_sample_counts_and_ascii_keys():
    with pytest.raises(ConfigError, match="count and digits must be at least 1"):
        passkey_text.sample(0, 500)
    with pytest.raises(ConfigError, match="must be digits"):
        passkey_text.passkey_text(500, "١٢٣٤٥", 0.5)
    (one,) = passkey_text.sample(1, 500)
    assert one.text.startswith("The pass key is")
