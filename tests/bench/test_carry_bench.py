"""`hololm bench carry` end to end at a tiny size: both trainings of each model, every column."""

import csv

import pytest

from hololm import cli


@pytest.mark.slow  # four short trainings and their evaluations: ~30 s
def test_tiny_carry_bench_writes_both_trainings(tmp_path, capsys):
    assert cli.main(["bench", "carry", "--output_dir", str(tmp_path), "--models", "long",
                     "--corpora", "stdlib", "--seq_len", "16", "--steps", "2", "--batch_size",
                     "2", "--max_train_tokens", "20000", "--tokens_per_length", "64",
                     "--max_documents", "2"]) == 0
    with open(tmp_path / "carry.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["training"] for r in rows] == ["fresh windows", "carried state"]
    for r in rows:
        assert r["documents"] == "2" and int(r["mean_document_tokens"]) >= 256
        assert all(float(r[k]) > 0 for k in ("loss_1x", "loss_4x", "loss_16x", "loss_documents"))
    report = (tmp_path / "carry.md").read_text()
    assert report.startswith("```bash\nhololm bench carry --output_dir")
    assert "| long | carried state |" in capsys.readouterr().out


@pytest.mark.slow  # two short trainings on generated pass-key documents: ~15 s
def test_tiny_carry_bench_scores_passkeys(tmp_path):
    assert cli.main(["bench", "carry", "--output_dir", str(tmp_path), "--models", "long",
                     "--corpora", "passkey", "--seq_len", "16", "--steps", "2", "--batch_size",
                     "2", "--max_train_tokens", "20000", "--passkey_lengths", "128", "300",
                     "--passkey_examples", "2", "--passkey_documents", "50",
                     "--passkey_max_length", "400"]) == 0
    with open(tmp_path / "passkey.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["training"] for r in rows] == ["fresh windows", "carried state"]
    assert all(0 <= float(r[f"passkey_{n}"]) <= float(r[f"digits_{n}"]) <= 1
               for r in rows for n in (128, 300))
    lengths = [len(p.read_bytes()) for p in (tmp_path / "passkey_corpus").glob("*.txt")]
    assert len(lengths) == 50 and 103 <= min(lengths) and max(lengths) <= 400
    report = (tmp_path / "carry.md").read_text()
    assert "| long | carried state | " in report
    assert "trained on 50 documents of 103-400 bytes" in report
    assert not (tmp_path / "carry.csv").exists()


@pytest.mark.parametrize(("flags", "message"), [
    (["--passkey_lengths", "64"], "--passkey_lengths must be at least 103 bytes"),
    (["--passkey_max_length", "100"], "--passkey_max_length must be at least 103 bytes"),
    (["--passkey_documents", "0"], "--passkey_documents must be at least 1"),
])
def test_bad_passkey_flags_are_refused(flags, message, capsys):
    with pytest.raises(SystemExit):
        cli.main(["bench", "carry", "--output_dir", "unused", "--corpora", "passkey", *flags])
    assert message in capsys.readouterr().err
