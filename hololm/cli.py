"""`hololm train | eval | generate | bench`: the command line. User errors (bad flags, unknown
datasets or presets, missing or corrupt checkpoints, no network) print one line and exit 2;
`--debug` shows the traceback instead."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
import typing

from hololm.data.corpora import DATASETS
from hololm.errors import ConfigError, HololmError
from hololm.models.presets import MODEL_TYPES, SIZES
from hololm.train.config import OPTIMIZERS, PRECISIONS, TrainConfig

TRAIN_HELP = {
    "model_type": f"model family or baseline: {', '.join(MODEL_TYPES)}",
    "model_size": f"named size: {', '.join(SIZES)} (hsn: the seed's tiny/small/base)",
    "model_overrides": 'JSON object of model-config fields, e.g. \'{"hidden_size": 128}\'',
    "seq_len": "training context length in tokens",
    "dataset": f"a local .txt/.jsonl file or folder, or one of: {', '.join(DATASETS)}",
    "data_dir": "local copy of a hub dataset (files in its format) instead of downloading",
    "streaming": "stream a hub dataset instead of downloading it whole",
    "max_train_tokens": "cap on training tokens read (needed for streamed data)",
    "max_eval_tokens": "cap on held-out tokens read for evaluation",
    "tokenizer": "'byte' (offline), 'bpe' (trained on the dataset, cached) or a hub/local name",
    "bpe_vocab_size": "vocabulary size of the BPE tokenizer",
    "cache_dir": "where tokenized data and BPE tokenizers are cached (default ~/.cache/hololm)",
    "batch_size": "sequences per process per micro-batch",
    "grad_accum_steps": "micro-batches accumulated per optimizer step",
    "max_steps": "optimizer steps to train for",
    "optimizer": f"{' | '.join(OPTIMIZERS)} (muon: Muon on hidden matrices, AdamW on the rest)",
    "lr": "peak learning rate of AdamW (of the AdamW-updated parameters with muon)",
    "muon_lr": "peak learning rate of the Muon-updated matrices",
    "weight_decay": "decoupled weight decay",
    "warmup_steps": "linear warmup steps before the cosine decay (to 10%% of the peak)",
    "grad_clip": "maximum gradient norm (0 disables clipping)",
    "max_bad_steps": "a step with a non-finite loss or gradient is skipped; this many in a row "
                     "stop the run (the last checkpoint stays intact)",
    "precision": f"{' | '.join(PRECISIONS)} (auto: bf16 on a GPU that supports it, else fp32)",
    "gradient_checkpointing": "recompute activations in the backward pass to save memory",
    "seed": "random seed (model init, data order, sampling)",
    "eval_steps": "steps between evaluations on the held-out split",
    "eval_batches": "held-out batches per evaluation",
    "sample_every": "steps between generated samples (default: at every evaluation)",
    "sample_tokens": "tokens per generated sample (0: no samples)",
    "sample_prompt": "prompt of the samples (default: the start of the held-out text)",
    "log_every": "steps between log lines",
    "output_dir": "where logs (log.csv), the loss curve (loss.png) and checkpoints go",
    "checkpoint_dir": "checkpoint directory (default: <output_dir>/checkpoints)",
    "save_steps": "steps between checkpoints",
    "keep_checkpoints": "checkpoints kept (older ones are deleted)",
    "resume": "continue from the latest checkpoint in checkpoint_dir, or from the given path",
}


BENCHMARKS = {
    "recall": "every family vs attention on MQAR, passkey, reverse, sort, copy, induction and "
              "vector recall",
    "capacity": "phasor memory recall vs stored items and hd_dim; random Fourier vs RoPE "
                "frequencies",
    "speed": "time, memory and tokens/s vs sequence length against SDPA attention and HF "
             "baselines",
    "ops": "memory ops, fast vs reference forms, against the machine's ceilings",
    "params": "parameter counts and cache sizes of every family",
}


def _add_train_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, defaults shown; unset flags keep the --config value."""
    hints = typing.get_type_hints(TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        flag, default = f"--{field.name}", field.default
        if default is dataclasses.MISSING:
            default = field.default_factory()
        help_text = f"{TRAIN_HELP[field.name]} (default: {default})"
        if field.name == "resume":
            parser.add_argument(flag, nargs="?", const=True, default=argparse.SUPPRESS,
                                help=help_text)
        elif hints[field.name] is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help_text)
        elif field.name == "model_overrides":
            parser.add_argument(flag, type=_json_object, default=argparse.SUPPRESS,
                                help=help_text)
        else:
            kind = next(k for k in (int, float, str) if k in typing.get_args(hints[field.name])
                        or hints[field.name] is k)
            parser.add_argument(flag, type=kind, default=argparse.SUPPRESS, help=help_text)
    parser.add_argument("--config", default=None,
                        help="JSON or YAML file of these settings; flags given here override it")


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON: {err.msg}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hololm", description="Holographic and "
                                     "associative-memory language models: train, evaluate, "
                                     "generate, benchmark.")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of errors instead of one line")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train a model (offline by default)",
                                description="Train any family or baseline. Several processes "
                                "(GPUs, nodes, or CPU processes over gloo): `accelerate launch "
                                "--multi_gpu --num_processes N -m hololm.cli train ...`.")
    _add_train_flags(train)

    evaluate = commands.add_parser("eval", help="perplexity / bits per byte of a checkpoint",
                                   description="Held-out loss, perplexity and bits per byte at "
                                   "several context lengths (train short, evaluate long).")
    evaluate.add_argument("--checkpoint", required=True,
                          help="a step directory, or a checkpoint directory (its latest step)")
    evaluate.add_argument("--dataset", default="stdlib",
                          help=f"local path or one of: {', '.join(DATASETS)} (default: stdlib)")
    evaluate.add_argument("--split", default="validation",
                          help="split to evaluate (default: validation, the held-out split)")
    evaluate.add_argument("--data_dir", default=None, help="local copy of a hub dataset")
    evaluate.add_argument("--context_lengths", type=int, nargs="+", default=None,
                          help="context lengths in tokens (default: 256 512 1024 2048 4096)")
    evaluate.add_argument("--max_windows", type=int, default=8,
                          help="windows evaluated per context length (default: 8)")
    evaluate.add_argument("--batch_size", type=int, default=1, help="windows per forward pass")
    evaluate.add_argument("--chunk_size", type=int, default=None,
                          help="hololm models: run long windows through the recurrent cache in "
                               "chunks of this many tokens (bounded memory; exact)")
    evaluate.add_argument("--output_dir", default=None,
                          help="write perplexity.csv and perplexity.png here")
    evaluate.add_argument("--device", default="cpu", help="torch device (default: cpu)")

    generate = commands.add_parser("generate", help="stream text from a checkpoint",
                                   description="Prefill the prompt, then decode token by token "
                                   "through the recurrent cache (constant memory for "
                                   "holographic layers).")
    generate.add_argument("--checkpoint", required=True,
                          help="a step directory, or a checkpoint directory (its latest step)")
    generate.add_argument("--prompt", default="", help="text to continue (default: empty)")
    generate.add_argument("--max_new_tokens", type=int, default=200,
                          help="tokens to generate (default: 200)")
    generate.add_argument("--temperature", type=float, default=0.8,
                          help="sampling temperature; 0 = greedy (default: 0.8)")
    generate.add_argument("--top_k", type=int, default=50,
                          help="sample among the k most likely tokens; 0 = all (default: 50)")
    generate.add_argument("--top_p", type=float, default=0.95,
                          help="nucleus sampling mass (default: 0.95)")
    generate.add_argument("--repetition_penalty", type=float, default=1.0,
                          help="> 1 discourages repeating tokens (default: 1.0)")
    generate.add_argument("--seed", type=int, default=None, help="seed for reproducible samples")
    generate.add_argument("--device", default="cpu", help="torch device (default: cpu)")

    bench = commands.add_parser("bench", help="benchmarks: " + " | ".join(BENCHMARKS),
                                description="Each benchmark has its own flags: `hololm bench "
                                "SUITE --help`. " + " ".join(f"{name}: {what}." for name, what
                                                              in BENCHMARKS.items()))
    bench.add_argument("suite", choices=tuple(BENCHMARKS), help="which benchmark")
    bench.add_argument("args", nargs=argparse.REMAINDER, help="arguments of that benchmark")
    return parser


def run_train(args: argparse.Namespace) -> None:
    from hololm.train.trainer import train

    values = {} if args.config is None else TrainConfig.from_file(args.config).to_dict()
    values.update({k: v for k, v in vars(args).items()
                   if k not in ("config", "command", "debug")})
    result = train(TrainConfig.from_dict(values))
    print(f"done: {result['steps']} steps, final loss {result['final_loss']:.4f}, "
          f"checkpoint {result['checkpoint']}")


def run_eval(args: argparse.Namespace) -> None:
    from hololm.eval.perplexity import DEFAULT_CONTEXT_LENGTHS, evaluate_checkpoint

    rows = evaluate_checkpoint(args.checkpoint, args.dataset, args.split,
                               args.context_lengths or DEFAULT_CONTEXT_LENGTHS,
                               data_dir=args.data_dir, batch_size=args.batch_size,
                               max_windows=args.max_windows, chunk_size=args.chunk_size,
                               device=args.device,
                               output_dir=args.output_dir)
    print("| context | tokens | loss | perplexity | bits per byte |")
    print("|---|---|---|---|---|")
    for r in rows:
        bpb = "–" if r.get("bits_per_byte") is None else f"{r['bits_per_byte']:.3f}"
        print(f"| {r['context_length']} | {r['tokens']} | {r['loss']:.4f} | "
              f"{r['perplexity']:.2f} | {bpb} |")


def run_generate(args: argparse.Namespace) -> None:
    from hololm.generation import generate_text, load_for_generation

    model, tokenizer = load_for_generation(args.checkpoint, args.device)
    sys.stdout.write(args.prompt)
    result = generate_text(model, tokenizer, args.prompt, max_new_tokens=args.max_new_tokens,
                           temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                           repetition_penalty=args.repetition_penalty, seed=args.seed,
                           stream=True)
    cache = "" if result.cache_bytes is None else f", cache {result.cache_bytes / 2**10:.1f} KiB"
    print(f"\n[{len(result.token_ids)} tokens, {result.tokens_per_second:.1f} tokens/s{cache}]",
          file=sys.stderr)


def run_bench(args: argparse.Namespace) -> None:
    module = importlib.import_module(f"hololm.bench.{args.suite}")
    module.main(args.args)


COMMANDS = {"train": run_train, "eval": run_eval, "generate": run_generate, "bench": run_bench}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except (HololmError, ValueError, TypeError, OSError) as err:
        # OSError: a path the user gave is a file, unwritable, or the disk is full
        if args.debug:
            raise
        kind = "error" if isinstance(err, HololmError | ConfigError) else type(err).__name__
        print(f"hololm {args.command}: {kind}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hololm {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
