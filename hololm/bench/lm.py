"""`hololm bench lm`: language modelling, every family against Llama, GPT-2 and Mamba-2 at matched
non-embedding parameters, trained on the same token stream in the same order with the trainer's
recipe, each at a few learning rates (the best chosen on held-out data), then scored on a test
set at 1x, 4x and 16x the training length.

    hololm bench lm --quick --output_dir runs/lm          # offline, small models, 2 CPU cores
    hololm bench lm --standard --output_dir runs/lm-std   # offline, larger and longer (CPU)
    hololm bench lm --full --output_dir runs/lm-gpu       # WikiText-103, GPT-2 tokens, a GPU

Corpora: shakespeare (bytes), stdlib (a BPE of --bpe_vocab_size tokens trained offline on its
training split), wikitext-103 (the GPT-2 tokenizer; downloads once). Outputs in --output_dir:
lm.md (the command, then a README-ready table per corpus), lm.csv, lm_sweep.csv,
lm_curves.csv and the loss-vs-tokens and loss-vs-wall-clock PNGs (see lm_report). Speeds and
memory are measured as the run goes: they only mean something on a machine left to the run.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from hololm.bench.lm_data import CorpusData, load_corpus
from hololm.bench.lm_metrics import decode_tokens_per_s, losses_by_length
from hololm.bench.lm_models import Shape, build_candidate, check_models, match_shape
from hololm.bench.lm_profiles import CORPORA, PROFILES, Profile, customise, describe
from hololm.bench.lm_report import write_report
from hololm.bench.lm_train import Run, choose, train_run
from hololm.devices import resolve_device
from hololm.errors import ConfigError
from hololm.eval.perplexity import evaluate_documents
from hololm.models.registry import NAMES
from hololm.train.carry import is_carriable
from hololm.train.trainer import padded_vocab, resolve_precision

MB = 2**20


def autocast_for(device: torch.device) -> AbstractContextManager:
    """bf16 autocast on a GPU that supports it (as the trainer's "auto" precision), else fp32."""
    if device.type == "cuda" and resolve_precision("auto") == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def match_all(profile: Profile, vocab_size: int) -> list[Shape]:
    return [match_shape(name, profile.target_params, vocab_size=vocab_size,
                        seq_len=profile.seq_len, depth=profile.depth,
                        width_step=profile.width_step, head_dim=profile.head_dim)
            for name in profile.models]


def run_corpus(profile: Profile, data: CorpusData, device: torch.device, seed: int,
               progress: bool = True) -> tuple[list[dict], list[dict], list[dict]]:
    """Every candidate at every learning rate on one corpus, and with `profile.carry_state`
    each pure-memory candidate once more with carried state at its chosen learning rate.
    Returns (results: one per candidate and training, its chosen run and test scores; runs: one
    per (candidate, training, lr); curves)."""
    vocab = padded_vocab(data.tokenizer)
    shapes = match_all(profile, vocab)
    label = data.corpus.label
    results, runs, curves = [], [], []
    paired = {s.name: profile.carry_state and is_carriable(build_candidate(s, vocab, 1, "meta"))
              for s in shapes}  # trained with carried state too, and scored on documents
    bar = tqdm(total=(len(shapes) * len(profile.lrs) + sum(paired.values())) * profile.steps,
               desc=f"lm: {label}", unit="step", disable=not progress, dynamic_ncols=True)

    def trained_run(shape: Shape, lr: float, carry: bool) -> tuple[Run, torch.nn.Module]:
        torch.manual_seed(seed)  # every candidate and learning rate from the same seed
        model = build_candidate(shape, vocab, profile.seq_len)
        name = candidate_label(shape.name, carry)

        def on_step(step: int, loss: float) -> None:
            bar.update()
            if step % 10 == 0:
                bar.set_postfix(model=name, lr=f"{lr:g}", loss=f"{loss:.3f}", refresh=False)

        run = train_run(model, data.train, data.select, lr=lr, seq_len=profile.seq_len,
                        batch_size=profile.batch_size, steps=profile.steps,
                        warmup_steps=profile.warmup_steps, seed=seed, device=device,
                        autocast=lambda: autocast_for(device), on_step=on_step,
                        carry_state=carry)
        bar.update(profile.steps - run.steps)  # a diverged run's remaining steps
        runs.append(_run_row(label, name, run, profile))
        curves.extend({"corpus": label, "model": name, "lr": lr, **point} for point in run.curve)
        return run, model

    for shape in shapes:
        trained: list[tuple[Run, torch.nn.Module]] = []
        for lr in profile.lrs:
            run, model = trained_run(shape, lr, carry=False)
            best = choose([r for r, _ in trained] + [run])
            trained = [(r, m) for r, m in [*trained, (run, model)] if r is best]  # keep the best
        results.append(_evaluate(profile, data, shape, trained, device,
                                 documents=paired[shape.name]))
        if paired[shape.name] and trained:
            run, model = trained_run(shape, trained[0][0].lr, carry=True)
            kept = [(run, model)] if choose([run]) is run else []
            results.append(_evaluate(profile, data, shape, kept, device, documents=True,
                                     carry=True))
    bar.close()
    return results, runs, curves


def candidate_label(name: str, carry: bool) -> str:
    """How a candidate's runs are named in the tables, CSVs and plots."""
    return f"{name} (carried state)" if carry else name


def _run_row(corpus: str, model: str, run: Run, profile: Profile) -> dict:
    tokens = run.steps * profile.batch_size * profile.seq_len
    return {"corpus": corpus, "model": model, "lr": run.lr, "steps": run.steps,
            "diverged_at": run.diverged_at, "val_loss": run.val_loss,
            "train_s": round(run.train_s, 3), "tokens_per_s": tokens / run.train_s,
            "peak_mb": run.peak_bytes / MB, "stream_hash": run.stream_hash}


def _evaluate(profile: Profile, data: CorpusData, shape: Shape,
              trained: list[tuple[Run, torch.nn.Module]], device: torch.device,
              documents: bool, carry: bool = False) -> dict:
    """The candidate's result: its chosen run, test losses at every length and decode speed,
    and with `documents` the loss over whole held-out documents."""
    row = {"corpus": data.corpus.label, "model": candidate_label(shape.name, carry),
           "training": "carried state" if carry else "fresh windows",
           "hidden_size": shape.hidden_size, "layers": shape.num_layers, "heads": shape.heads,
           "params": shape.params, "non_embedding": shape.non_embedding}
    if not trained:
        status = "diverged" if carry else "diverged at every lr"  # carried: one lr, the chosen
        return {**row, "status": status, "lr": None, "test": []}
    (run, model), = trained
    tokens = run.steps * profile.batch_size * profile.seq_len
    row.update(status="ok", lr=run.lr, val_loss=run.val_loss, tokens_per_s=tokens / run.train_s,
               peak_mb=run.peak_bytes / MB)

    def autocast() -> AbstractContextManager:
        return autocast_for(device)

    started = time.perf_counter()
    row["test"] = losses_by_length(model, data.test, profile.seq_len,
                                   profile.length_multiples, tokens=profile.eval_tokens,
                                   batch_size=profile.eval_batch_size, autocast=autocast)
    try:
        row["decode_tokens_per_s"] = decode_tokens_per_s(
            model, data.test.tokens[:profile.decode_context], profile.decode_steps,
            profile.seq_len, device, autocast)
    except ConfigError as err:  # GPT-2 past its position table
        row["decode_tokens_per_s"] = f"refused: {err}"
    if documents:
        row["documents"] = _whole_documents(profile, data, model, autocast)
    row["eval_s"] = round(time.perf_counter() - started, 3)
    return row


def _whole_documents(profile: Profile, data: CorpusData, model: torch.nn.Module,
                     autocast: Callable[[], AbstractContextManager]) -> dict:
    """`evaluate_documents` on the held-out documents of at least the longest test length, read
    whole through the cache; its status says why where there is none."""
    try:
        with autocast():
            row = evaluate_documents(model, data.heldout.tokens, data.tokenizer.eos_token_id,
                                     profile.longest, max_documents=profile.max_documents,
                                     chunk_size=profile.seq_len,
                                     bytes_per_token=data.heldout.bytes_per_token)
    except ConfigError as err:  # no document that long
        return {"status": f"refused: {err}"}
    return {**row, "status": "ok"}


# flags that replace a field of the profile
PROFILE_FLAGS = {
    "target_params": "non-embedding parameters every candidate is matched to",
    "depth": "layers tried first when matching",
    "seq_len": "training length in tokens",
    "batch_size": "sequences per training step",
    "steps": "training steps per run",
    "warmup_steps": "linear warmup steps before the cosine decay (where --steps leaves the "
                    "profile's no room: a tenth of the steps)",
    "eval_tokens": "test tokens scored per context length",
    "select_tokens": "held-out tokens the learning rate is chosen on",
    "decode_context": "decoding tokens/s is measured after this many tokens",
    "max_train_tokens": "cap on the training tokens read (hub corpora)",
    "max_documents": "whole held-out documents scored with --carry_state (the first that are "
                     "at least the longest test length)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hololm bench lm",
        description="Language-modelling benchmark: every family and the HF baselines at "
        "matched non-embedding parameters (within 10%), trained on the same batches in the same "
        "order with the trainer's AdamW recipe at each learning rate of a sweep (the best "
        "chosen on held-out data), scored on a test set at 1x, 4x and 16x the training length "
        "(loss ± standard error, bits per byte), with training tokens/s, peak memory and "
        "decoding tokens/s.")
    size = parser.add_mutually_exclusive_group()
    for profile in PROFILES.values():
        size.add_argument(f"--{profile.name}", action="store_true", help=describe(profile))
    parser.add_argument("--output_dir", required=True,
                        help="folder for lm.md, lm.csv, lm_sweep.csv, lm_curves.csv and the PNGs")
    parser.add_argument("--models", nargs="+", default=None, metavar="NAME",
                        help=f"registry names to compare (default: the profile's); any of: "
                             f"{', '.join(NAMES)}")
    parser.add_argument("--corpora", nargs="+", default=None, choices=tuple(CORPORA),
                        help="corpora (default: the profile's)")
    parser.add_argument("--lrs", type=float, nargs="+", default=None,
                        help="peak learning rates swept (default: the profile's)")
    for name, text in PROFILE_FLAGS.items():
        parser.add_argument(f"--{name}", type=int, default=None,
                            help=f"{text} (default: the profile's)")
    parser.add_argument("--carry_state", action="store_true",
                        help="also train every candidate without attention layers with carried "
                             "state (hololm train --carry_state: contiguous streams, each window "
                             "from the previous one's detached memory) at its chosen learning "
                             "rate, and score both trainings on whole held-out documents too")
    parser.add_argument("--bpe_vocab_size", type=int, default=None,
                        help="vocabulary size of the BPE corpora's tokenizer (default: 4096)")
    parser.add_argument("--data_dir", default=None,
                        help="local copy of a hub corpus (WikiText-103 files) instead of "
                             "downloading")
    parser.add_argument("--cache_dir", default=None,
                        help="where tokenized data and BPE tokenizers are cached (default "
                             "~/.cache/hololm)")
    parser.add_argument("--device", default=None,
                        help="torch device (default: cuda for --full, else cpu)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of every model's initialisation and of the batch order "
                             "(default: 0)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser


def profile_from_args(args: argparse.Namespace) -> Profile:
    base = PROFILES["full" if args.full else "standard" if args.standard else "quick"]
    return customise(base, models=check_models(args.models) if args.models else None,
                     corpora=tuple(args.corpora) if args.corpora else None,
                     lrs=tuple(args.lrs) if args.lrs else None,
                     carry_state=args.carry_state or None,
                     **{name: getattr(args, name) for name in PROFILE_FLAGS})


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    profile = profile_from_args(args)
    device = resolve_device(args.device or ("cuda" if args.full else "cpu"))
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results, runs, curves, sizes = [], [], [], []
    for name in profile.corpora:
        corpus = CORPORA[name]
        if args.bpe_vocab_size is not None and corpus.tokenizer == "bpe":
            corpus = replace(corpus, bpe_vocab_size=args.bpe_vocab_size)
        data = load_corpus(corpus, select_tokens=profile.select_tokens,
                           test_tokens=profile.eval_tokens + profile.longest + 1,
                           cache_dir=args.cache_dir, data_dir=args.data_dir,
                           max_train_tokens=profile.max_train_tokens)
        sizes.append(f"{corpus.label}: {len(data.train):,} training, {len(data.select):,} "
                     f"learning-rate, {len(data.test):,} test tokens")
        found = run_corpus(profile, data, device, args.seed, progress=not args.no_progress)
        for collected, new in zip((results, runs, curves), found, strict=True):
            collected += new
        # after every corpus: a long run stopped later keeps the corpora it finished
        text = write_report(out, "hololm bench lm " + shlex.join(argv),
                            _header(profile, args.seed, device, sizes, started), results, runs,
                            curves, profile.length_multiples, profile.decode_context)
    print(text)
    return 0


def _header(profile: Profile, seed: int, device: torch.device, sizes: list[str],
            started: float) -> dict[str, str]:
    precision = "bf16 autocast" if isinstance(autocast_for(device), torch.autocast) else "fp32"
    return {
        "profile": f"{profile.name}: target {profile.target_params:,} non-embedding parameters "
                   f"(±10 %), seq_len {profile.seq_len}, batch {profile.batch_size}, "
                   f"{profile.steps} steps ({profile.warmup_steps} warmup), learning rates "
                   f"{', '.join(f'{lr:g}' for lr in profile.lrs)}, seed {seed}",
        "data": "; ".join(sizes),
        "test": f"{profile.eval_tokens:,} tokens per context length "
                f"({', '.join(f'{m}x' for m in profile.length_multiples)} the training length)",
        **({"carried state": "each candidate without attention layers trained once more at its "
                             "chosen learning rate on contiguous streams (one per batch row), "
                             "each window from the previous one's detached memory; both "
                             "trainings also read whole held-out documents of at least "
                             f"{profile.longest:,} tokens (the first {profile.max_documents}) "
                             "through the cache"}
           if profile.carry_state else {}),
        "device": f"{device} ({torch.get_num_threads()} threads), {precision}",
        "wall-clock": f"{(time.perf_counter() - started) / 60:.1f} min; speeds and memory are "
                      f"meaningful only on a machine left to this run",
    }


if __name__ == "__main__":
    raise SystemExit(main())
