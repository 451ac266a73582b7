"""`hololm bench carry`: what training with carried state buys. Each model is trained twice on
the same corpus with the same recipe — on fresh windows (every window starts from an empty
memory; `BatchSampler`) and with `--carry_state` (each row reads a contiguous stream and each
window starts from the previous one's detached memory; `StreamSampler`) — then both are scored on
held-out text at 1x, 4x and 16x the window length and on whole held-out documents of at least
16x it, read from their first token to their end-of-text through the recurrent cache.

The `passkey` corpus is generated (hololm/data/passkey_text.py): documents of 103 to 2,048
bytes, a pass key hidden in filler and asked for at the end. Models trained on it are scored on
passkey retrieval at 256 bytes to 16k (hololm/eval/passkey.py), within and far past the
lengths they trained on: whether a memory trained from carried state keeps a key longer.

    hololm bench carry --output_dir runs/carry        # shakespeare and stdlib, bytes, ~CPU
    hololm bench carry --corpora passkey --output_dir runs/carry-passkey

Writes carry.md (the command, then one table per corpus) with carry.csv for the held-out
losses and passkey.csv for passkey retrieval. Document resets are on in both trainings (the
default), so the two differ only in what a window starts from.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from hololm.bench.csv_rows import write_csv
from hololm.data import passkey_text
from hololm.eval.checkpoints import load_model_and_tokenizer
from hololm.eval.passkey import passkey_accuracy
from hololm.eval.perplexity import evaluate_checkpoint
from hololm.models.registry import MEMORIES, VARIANTS, family_of
from hololm.train.config import TrainConfig
from hololm.train.trainer import train

MODELS = ("hologpt-delta", "holo")
CORPORA = ("shakespeare", "stdlib")
PASSKEY = "passkey"
PASSKEY_LENGTHS = (256, 1024, 2048, 4096, 8192, 16384)  # bytes
PASSKEY_FOLDER = "passkey_corpus"  # the generated training documents, under --output_dir
PASSKEY_SHORTEST = passkey_text.shortest(passkey_text.DIGITS)  # bytes: needle and question
# width 192, 4 layers, 4 heads: the demo's shape; the phasor memory with 384 complex channels
SHAPE = {"hidden_size": 192, "num_attention_heads": 4}
PHASOR = {"hd_dim": 384}


def train_config(model: str, dataset: str, carry: bool, args: argparse.Namespace,
                 out: Path) -> TrainConfig:
    shape = {**SHAPE, **(PHASOR if family_of(model)[0].name == "holo" else {})}
    return TrainConfig(model_type=model, model_size="tiny", model_overrides=shape,
                       dataset=dataset, tokenizer="byte", seq_len=args.seq_len,
                       batch_size=args.batch_size, max_steps=args.steps, lr=args.lr,
                       warmup_steps=max(1, args.steps // 10), eval_steps=args.steps,
                       eval_batches=4, save_steps=args.steps, sample_tokens=0,
                       log_every=max(1, args.steps // 4), carry_state=carry,
                       max_train_tokens=args.max_train_tokens, seed=args.seed,
                       output_dir=str(out), precision="fp32")


def run_one(model: str, corpus: str, carry: bool, args: argparse.Namespace) -> dict:
    out = Path(args.output_dir) / "runs" / f"{corpus}-{model}-{'carry' if carry else 'fresh'}"
    dataset = str(Path(args.output_dir) / PASSKEY_FOLDER) if corpus == PASSKEY else corpus
    started = time.perf_counter()
    result = train(train_config(model, dataset, carry, args, out))
    train_s = time.perf_counter() - started
    row = {"corpus": corpus, "model": model, "training": "carried state" if carry
           else "fresh windows", "steps": args.steps, "seq_len": args.seq_len,
           "train_s": round(train_s, 1)}
    if corpus == PASSKEY:
        return row | passkey_scores(result["checkpoint"], args)
    return row | held_out_scores(result["checkpoint"], corpus, args)


def passkey_scores(checkpoint: str, args: argparse.Namespace) -> dict:
    """Passkey retrieval at every length of `args.passkey_lengths`: whole keys
    (passkey_<length>) and key digits (digits_<length>; chance is 1 in 10)."""
    model, tokenizer = load_model_and_tokenizer(checkpoint)
    rows = passkey_accuracy(model, tokenizer, args.passkey_lengths, args.passkey_examples,
                            seed=args.seed + 1)
    scores = {"passkey_examples": args.passkey_examples,
              "passkey_documents": args.passkey_documents,
              "passkey_max_length": args.passkey_max_length}
    for r in rows:
        scores |= {f"passkey_{r['length']}": r["accuracy"],
                   f"digits_{r['length']}": r["digit_accuracy"]}
    return scores


def held_out_scores(checkpoint: str, corpus: str, args: argparse.Namespace) -> dict:
    """Held-out loss at 1x, 4x, 16x the window and on whole documents."""
    lengths = [args.seq_len * k for k in (1, 4, 16)]
    rows = evaluate_checkpoint(checkpoint, corpus, context_lengths=lengths,
                               tokens_per_length=args.tokens_per_length,
                               chunk_size=args.seq_len, batch_size=4,
                               documents=16 * args.seq_len, max_documents=args.max_documents)
    by_mode = {r["context_length"] if r["mode"] != "documents" else "documents": r
               for r in rows}
    row = {}
    for k, length in zip((1, 4, 16), lengths, strict=True):
        row[f"loss_{k}x"] = by_mode[length]["loss"]
        row[f"se_{k}x"] = by_mode[length]["loss_se"]
    documents = by_mode["documents"]
    row.update({"loss_documents": documents["loss"], "se_documents": documents["loss_se"],
                "documents": documents["windows"],
                "mean_document_tokens": documents["context_length"]})
    return row


def _loss_table(mine: list[dict]) -> list[str]:
    L = mine[0]["seq_len"]
    lines = [f"| model | training | @{L} (1x) | @{4 * L} (4x) | @{16 * L} (16x) | whole "
             f"documents | documents (mean tokens) | train s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in mine:
        cells = [f"{r[f'loss_{k}x']:.3f} ± {r[f'se_{k}x']:.3f}" for k in (1, 4, 16)]
        lines.append(f"| {r['model']} | {r['training']} | {' | '.join(cells)} | "
                     f"{r['loss_documents']:.3f} ± {r['se_documents']:.3f} | "
                     f"{r['documents']} ({r['mean_document_tokens']:,}) | {r['train_s']:.0f} |")
    return lines


def _passkey_table(mine: list[dict]) -> list[str]:
    lengths = [int(k.removeprefix("digits_")) for k in mine[0] if k.startswith("digits_")]
    lines = [f"Pass keys retrieved whole (of {mine[0]['passkey_examples']} per length, depths "
             f"spread evenly) and, in brackets, key digits right (chance: 10 %), by text length "
             f"in bytes; trained on {mine[0]['passkey_documents']:,} documents of "
             f"{PASSKEY_SHORTEST}-{mine[0]['passkey_max_length']:,} bytes (log-uniform) in "
             f"windows of {mine[0]['seq_len']}.", "",
             "| model | training | " + " | ".join(f"{n:,}" for n in lengths) + " | train s |",
             "|---|---|" + "---|" * len(lengths) + "---|"]
    for r in mine:
        cells = [f"{100 * r[f'passkey_{n}']:.0f} % ({100 * r[f'digits_{n}']:.0f} %)"
                 for n in lengths]
        lines.append(f"| {r['model']} | {r['training']} | {' | '.join(cells)} | "
                     f"{r['train_s']:.0f} |")
    return lines


def write_report(rows: list[dict], out: Path, command: str, minutes: float) -> str:
    loss_rows = [r for r in rows if r["corpus"] != PASSKEY]
    passkey_rows = [r for r in rows if r["corpus"] == PASSKEY]
    for mine, name in ((loss_rows, "carry.csv"), (passkey_rows, "passkey.csv")):
        if mine:
            write_csv(mine, out / name)
    lines = [f"```bash\n{command}\n```", "", f"Made in {minutes:.1f} min."
             + (" Held-out loss (nats per byte) ± standard error over windows (documents); "
                "`documents`: every held-out document of at least 16x the window length read "
                "whole through the cache." if loss_rows else ""), ""]
    for corpus in dict.fromkeys(r["corpus"] for r in rows):
        mine = [r for r in rows if r["corpus"] == corpus]
        table = _passkey_table(mine) if corpus == PASSKEY else _loss_table(mine)
        lines += [f"## {corpus}", "", *table, ""]
    text = "\n".join(lines)
    (out / "carry.md").write_text(text + "\n", encoding="utf-8")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hololm bench carry", description="Train each model on fresh windows and with "
        "--carry_state (same corpus, recipe and steps), then score both at 1x, 4x and 16x the "
        "window length and on whole held-out documents of at least 16x it.")
    parser.add_argument("--output_dir", required=True,
                        help="folder for carry.md, carry.csv and the runs/ it trains")
    parser.add_argument("--models", nargs="+", default=list(MODELS),
                        choices=[*MEMORIES, *VARIANTS],
                        help=f"pure-memory families or variants (default: {' '.join(MODELS)})")
    parser.add_argument("--corpora", nargs="+", default=list(CORPORA),
                        choices=[*CORPORA, PASSKEY],
                        help="embedded corpora, byte tokens (default: shakespeare stdlib); "
                             "passkey: generated pass-key documents, scored on retrieval")
    parser.add_argument("--seq_len", type=int, default=128,
                        help="training window length (default: 128)")
    parser.add_argument("--steps", type=int, default=400, help="training steps (default: 400)")
    parser.add_argument("--batch_size", type=int, default=16,
                        help="windows per step (default: 16)")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate "
                        "(default: 2e-3, the demo's)")
    parser.add_argument("--max_train_tokens", type=int, default=2_000_000,
                        help="training tokens read (default: 2,000,000)")
    parser.add_argument("--tokens_per_length", type=int, default=100_000,
                        help="held-out tokens scored per window length (default: 100,000)")
    parser.add_argument("--max_documents", type=int, default=20,
                        help="whole held-out documents scored, the first that are long enough "
                             "(default: 20)")
    parser.add_argument("--passkey_lengths", nargs="+", type=int,
                        default=list(PASSKEY_LENGTHS),
                        help="text lengths in bytes the passkey models are scored at (default: "
                             f"{' '.join(map(str, PASSKEY_LENGTHS))})")
    parser.add_argument("--passkey_examples", type=int, default=20,
                        help="pass keys asked per length (default: 20)")
    parser.add_argument("--passkey_documents", type=int, default=3000,
                        help="generated passkey training documents (default: 3000)")
    parser.add_argument("--passkey_max_length", type=int, default=2048,
                        help="longest passkey training document in bytes; lengths are "
                             f"log-uniform from {PASSKEY_SHORTEST} (default: 2048)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    lengths = {"passkey_lengths": min(args.passkey_lengths),
               "passkey_max_length": args.passkey_max_length}
    for flag, value in lengths.items():
        if PASSKEY in args.corpora and value < PASSKEY_SHORTEST:
            parser.error(f"--{flag} must be at least {PASSKEY_SHORTEST} bytes (a "
                         f"{passkey_text.DIGITS}-digit key's needle and question), got {value}")
    for flag in ("passkey_examples", "passkey_documents"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("carry.csv", "passkey.csv"):  # the report names only what this run writes
        (out / stale).unlink(missing_ok=True)
    if PASSKEY in args.corpora:
        passkey_text.write_corpus(out / PASSKEY_FOLDER, args.passkey_documents,
                                  PASSKEY_SHORTEST, args.passkey_max_length, seed=args.seed)
    started = time.perf_counter()
    rows = [run_one(model, corpus, carry, args) for corpus in args.corpora
            for model in args.models for carry in (False, True)]
    command = "hololm bench carry " + shlex.join(sys.argv[1:] if argv is None else argv)
    print(write_report(rows, out, command, (time.perf_counter() - started) / 60))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
