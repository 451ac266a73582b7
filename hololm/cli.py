"""`hololm train | eval | generate | bench`: the command line. User errors (hololm's own errors:
bad settings, unknown datasets or presets, missing or corrupt checkpoints, no network; and paths
the system refuses) print one line and exit 2; `--debug` shows the traceback instead. Any other
exception is a bug in hololm and shows its traceback.

Only the subcommand that runs gets its flags, and the tables they list are imported then:
`hololm --help` and `hololm generate --help` start without torch or transformers."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import signal
import sys
import typing
from collections.abc import Callable, Iterable

from hololm.errors import ConfigError, HololmError, is_out_of_memory


def _train_help() -> dict[str, str]:
    """Help of each TrainConfig field's flag; the tables of choices are imported here, as they
    import the models (torch, transformers)."""
    from hololm.data.corpora import DATASETS
    from hololm.models.registry import NAMES, SIZES
    from hololm.train.config import OPTIMIZERS, PRECISIONS

    return {
        "model_type": f"model family, variant or baseline: {', '.join(NAMES)}",
        "model_size": f"named size: {', '.join(SIZES)} (hsn: HoloSpectralNet's tiny/small/base)",
        "model_overrides": 'JSON object of model-config fields, e.g. \'{"hidden_size": 128}\'',
        "seq_len": "training context length in tokens",
        "dataset": f"a local .txt/.jsonl file or folder, or one of: {', '.join(DATASETS)}",
        "data_dir": "local copy of a hub dataset (files in its format) instead of downloading",
        "streaming": "stream a hub dataset instead of downloading it whole",
        "max_train_tokens": "cap on training tokens read (needed for streamed data)",
        "max_eval_tokens": "cap on held-out tokens read for evaluation",
        "tokenizer": "'byte' (offline), 'bpe' (trained on the dataset, cached) or a hub/local "
                     "name",
        "bpe_vocab_size": "vocabulary size of the BPE tokenizer",
        "cache_dir": "where tokenized data and BPE tokenizers are cached (default "
                     "~/.cache/hololm)",
        "document_resets": "hololm models read each packed document alone: every memory, "
                           "short conv and attention layer starts afresh at the token after an "
                           "end-of-text and positions restart there (position_ids); "
                           "--no-document_resets lets the memories read across documents. "
                           "The Hugging Face baselines always do",
        "carry_state": "each batch row reads a contiguous stream and each window starts from "
                       "the memory the row's previous window ended with (detached: truncated "
                       "backpropagation through time), so a pure-memory model trains over "
                       "documents far longer than --seq_len at one window's memory cost; "
                       "checkpoints keep the carried states",
        "batch_size": "sequences per process per micro-batch",
        "grad_accum_steps": "micro-batches accumulated per optimizer step",
        "max_steps": "optimizer steps to train for",
        "optimizer": f"{' | '.join(OPTIMIZERS)} (muon: Muon on hidden matrices, AdamW on the "
                     "rest)",
        "lr": "peak learning rate of AdamW (of the AdamW-updated parameters with muon)",
        "muon_lr": "peak learning rate of the Muon-updated matrices",
        "weight_decay": "decoupled weight decay",
        "warmup_steps": "linear warmup steps before the cosine decay (to 10%% of the peak); must "
                        "be less than --max_steps. Not given (here or in --config), the default "
                        "is cut to a tenth of a run it does not fit, with a warning",
        "grad_clip": "maximum gradient norm (0 disables clipping)",
        "max_bad_steps": "a step with a non-finite loss or gradient is skipped; this many in a "
                         "row stop the run (the last checkpoint stays intact)",
        "divergence_patience": "stop the run when the training loss (median of the last 20 "
                               "steps) stays this many steps in a row far above its best (0.5 "
                               "nats, or a quarter of it) or, after warmup, at ln(vocabulary); "
                               "checkpoints saved meanwhile prune nothing, so the last healthy "
                               "one is kept (0: off)",
        "precision": f"{' | '.join(PRECISIONS)} (auto: bf16 on a GPU that supports it, else "
                     "fp32)",
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
    "recall": "every family (original and improved) vs attention and Mamba-2: MQAR accuracy vs "
              "state size (zoology), other tasks where attention solves them",
    "capacity": "phasor memory recall vs stored items and hd_dim; random Fourier vs RoPE "
                "frequencies",
    "speed": "time, memory and tokens/s vs sequence length against SDPA attention and HF "
             "baselines",
    "ops": "memory ops, fast vs reference forms, against the machine's ceilings",
    "params": "parameter counts and cache sizes of every family",
    "lm": "language modelling: held-out loss and bits per byte at 1x, 4x and 16x the training "
          "length against Llama, GPT-2 and Mamba-2 at matched parameters",
    "carry": "training with carried state (--carry_state) vs fresh windows: held-out loss at "
             "1x, 4x, 16x the window and on whole documents; passkey retrieval to 16k",
}


def _add_train_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, defaults shown; unset flags keep the --config value."""
    from hololm.train.config import TrainConfig

    helps, hints = _train_help(), typing.get_type_hints(TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        flag, default = f"--{field.name}", field.default
        if default is dataclasses.MISSING:
            default = field.default_factory()
        help_text = f"{helps[field.name]} (default: {default})"
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


def _add_eval_flags(parser: argparse.ArgumentParser) -> None:
    from hololm.data.corpora import DATASETS

    parser.add_argument("--checkpoint", required=True,
                        help="a step directory, or a checkpoint directory (its latest step)")
    parser.add_argument("--dataset", default="stdlib",
                        help=f"local path or one of: {', '.join(DATASETS)} (default: stdlib)")
    parser.add_argument("--split", default="validation",
                        help="split to evaluate (default: validation, the held-out split)")
    parser.add_argument("--data_dir", default=None, help="local copy of a hub dataset")
    parser.add_argument("--context_lengths", type=POSITIVE_INT, nargs="+", default=None,
                        help="context lengths in tokens (default: 256 512 1024 2048 4096)")
    parser.add_argument("--tokens_per_length", type=POSITIVE_INT, default=100_000,
                        help="held-out tokens scored per context length: as many whole windows "
                             "as cover them, or the whole split if shorter (default: 100000)")
    parser.add_argument("--max_windows", type=POSITIVE_INT, default=None,
                        help="at most this many windows per context length (default: no cap)")
    parser.add_argument("--batch_size", type=POSITIVE_INT, default=4,
                        help="windows per forward pass (default: 4)")
    parser.add_argument("--chunk_size", type=POSITIVE_INT, default=None,
                        help="hololm models: run long windows through the recurrent cache in "
                             "chunks of this many tokens (bounded memory; exact)")
    parser.add_argument("--documents", type=POSITIVE_INT, default=None, metavar="MIN_TOKENS",
                        help="also score every held-out document of at least this many tokens "
                             "whole, from its first token to its end-of-text (through the cache "
                             "with --chunk_size): the context a --carry_state model learns to "
                             "use (default: off)")
    parser.add_argument("--max_documents", type=POSITIVE_INT, default=None,
                        help="with --documents: the first this many such documents (default: "
                             "all)")
    parser.add_argument("--output_dir", default=None,
                        help="write perplexity.csv and perplexity.png here")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def _add_generate_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True,
                        help="a step directory, or a checkpoint directory (its latest step)")
    parser.add_argument("--prompt", default="", help="text to continue (default: empty)")
    parser.add_argument("--max_new_tokens", type=POSITIVE_INT, default=200,
                        help="tokens to generate (default: 200)")
    parser.add_argument("--temperature", default=0.8,
                        type=_number(float, lambda v: v >= 0, "must be >= 0"),
                        help="sampling temperature; 0 = greedy (default: 0.8)")
    parser.add_argument("--top_k", default=50, type=_number(int, lambda v: v >= 0, "must be >= 0"),
                        help="sample among the k most likely tokens; 0 = all (default: 50)")
    parser.add_argument("--top_p", default=0.95,
                        type=_number(float, lambda v: 0 < v <= 1, "must be in (0, 1]"),
                        help="nucleus sampling mass (default: 0.95)")
    parser.add_argument("--repetition_penalty", default=1.0,
                        type=_number(float, lambda v: v > 0, "must be > 0"),
                        help="> 1 discourages repeating tokens (default: 1.0)")
    parser.add_argument("--seed", type=int, default=None, help="seed for reproducible samples")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def _add_bench_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", choices=tuple(BENCHMARKS), help="which benchmark")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments of that benchmark")


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON: {err.msg}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _number(kind: type, allowed: Callable[[float], bool], rule: str) -> Callable[[str], float]:
    """An argparse type: `kind` of the text, refused with `rule` unless allowed. The library
    checks these values too, but as ValueErrors, which the CLI shows with a traceback (bugs)."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind.__name__}") from None
        if not allowed(value):
            raise argparse.ArgumentTypeError(f"{text} {rule}")
        return value

    return parse


POSITIVE_INT = _number(int, lambda v: v >= 1, "must be at least 1")

SUBCOMMANDS = {  # name: (its line in `hololm --help`, its description, what adds its flags)
    "train": ("train a model (offline by default)",
              "Train any family or baseline. Several processes (GPUs, nodes, or CPU processes "
              "over gloo): `accelerate launch --multi_gpu --num_processes N -m hololm.cli "
              "train ...`.", _add_train_flags),
    "eval": ("perplexity / bits per byte of a checkpoint",
             "Held-out loss, perplexity and bits per byte at several context lengths (train "
             "short, evaluate long).", _add_eval_flags),
    "generate": ("stream text from a checkpoint",
                 "Prefill the prompt, then decode token by token through the recurrent cache "
                 "(constant memory for holographic layers).", _add_generate_flags),
    "bench": ("benchmarks: " + " | ".join(BENCHMARKS),
              "Each benchmark has its own flags: `hololm bench SUITE --help`. "
              + " ".join(f"{name}: {what}." for name, what in BENCHMARKS.items()),
              _add_bench_flags),
}


def build_parser(with_flags: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every subcommand; only those in `with_flags` (default: all) get their
    flags, so that running one imports only the tables its own flags list."""
    parser = argparse.ArgumentParser(prog="hololm", description="Holographic and "
                                     "associative-memory language models: train, evaluate, "
                                     "generate, benchmark.")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of errors instead of one line")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = set(SUBCOMMANDS if with_flags is None else with_flags)
    for name, (summary, description, add_flags) in SUBCOMMANDS.items():
        sub = commands.add_parser(name, help=summary, description=description)
        if name in chosen:
            add_flags(sub)
    return parser


def run_train(args: argparse.Namespace) -> None:
    from accelerate import PartialState

    from hololm.train.config import TrainConfig, read_settings
    from hololm.train.trainer import train

    settings = {} if args.config is None else read_settings(args.config)
    TrainConfig.from_dict(settings)  # a bad file is refused even where flags override its values
    settings.update({k: v for k, v in vars(args).items()
                     if k not in ("config", "command", "debug")})
    cfg = TrainConfig.from_dict(settings)
    if "warmup_steps" in settings and cfg.warmup_steps >= cfg.max_steps:
        # the trainer would cut it short, as it does the default; a value the user chose is
        # refused instead
        raise ConfigError(f"warmup_steps={cfg.warmup_steps} must be less than max_steps="
                          f"{cfg.max_steps}: the learning rate would never reach --lr")
    result = train(cfg)
    if PartialState().is_main_process:
        print(f"done: {result['steps']} steps, final loss {result['final_loss']:.4f}, "
              f"checkpoint {result['checkpoint']}")


def run_eval(args: argparse.Namespace) -> None:
    from hololm.devices import resolve_device
    from hololm.eval.perplexity import DEFAULT_CONTEXT_LENGTHS, evaluate_checkpoint

    resolve_device(args.device)
    rows = evaluate_checkpoint(args.checkpoint, args.dataset, args.split,
                               args.context_lengths or DEFAULT_CONTEXT_LENGTHS,
                               data_dir=args.data_dir, batch_size=args.batch_size,
                               max_windows=args.max_windows,
                               tokens_per_length=args.tokens_per_length,
                               chunk_size=args.chunk_size,
                               device=args.device,
                               output_dir=args.output_dir, documents=args.documents,
                               max_documents=args.max_documents)
    print("| context | windows | tokens | loss ± standard error | perplexity | bits per byte |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        bpb = "–" if r.get("bits_per_byte") is None else f"{r['bits_per_byte']:.3f}"
        context = (f"whole documents (mean {r['context_length']})" if r["mode"] == "documents"
                   else r["context_length"])
        print(f"| {context} | {r['windows']} | {r['tokens']} | {r['loss']:.4f} ± "
              f"{r['loss_se']:.4f} | {r['perplexity']:.2f} | {bpb} |")


def run_generate(args: argparse.Namespace) -> None:
    from hololm.devices import resolve_device
    from hololm.generation import generate_text, load_for_generation

    _check_utf8("--prompt", args.prompt)
    model, tokenizer = load_for_generation(args.checkpoint, resolve_device(args.device))
    sys.stdout.write(args.prompt)
    result = generate_text(model, tokenizer, args.prompt, max_new_tokens=args.max_new_tokens,
                           temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                           repetition_penalty=args.repetition_penalty, seed=args.seed,
                           stream=True)
    cache = "" if result.cache_bytes is None else f", cache {result.cache_bytes / 2**10:.1f} KiB"
    print(f"\n[{len(result.token_ids)} tokens, {result.tokens_per_second:.1f} tokens/s{cache}]",
          file=sys.stderr)


def _check_utf8(flag: str, text: str) -> None:
    """A command-line argument that is not valid UTF-8 reaches Python with its bad bytes as
    lone surrogates (PEP 383), which a tokenizer rejects with a TypeError."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        bad = ord(text[err.start])
        byte = f"byte 0x{bad - 0xDC00:02x}" if 0xDC80 <= bad <= 0xDCFF else f"U+{bad:04X}"
        raise ConfigError(f"{flag} is not valid UTF-8 text ({byte} at character {err.start})"
                          ) from None


def run_bench(args: argparse.Namespace) -> None:
    module = importlib.import_module(f"hololm.bench.{args.suite}")
    module.main(args.args)


COMMANDS = {"train": run_train, "eval": run_eval, "generate": run_generate, "bench": run_bench}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((arg for arg in argv if not arg.startswith("-")), None)  # after --debug
    args = build_parser([command] if command else []).parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except (HololmError, OSError) as err:
        # OSError: a path the user gave is a file, unwritable, or the disk is full
        if args.debug:
            raise
        kind = "error" if isinstance(err, HololmError) else type(err).__name__
        print(f"hololm {args.command}: {kind}: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001  (anything else re-raised: a bug shows its traceback)
        if args.debug or not is_out_of_memory(err):
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"hololm {args.command}: error: out of memory ({first}); lower --batch_size or "
              f"--seq_len, or use --gradient_checkpointing", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        # the trainer saves, then stops with 128 + the signal, as the shell reports a signal
        signum = getattr(err, "signum", signal.SIGINT)
        print(f"hololm {args.command}: {err or 'interrupted'}", file=sys.stderr)
        return 128 + signum
    return 0  # any other exception is a bug: Python prints its traceback and exits with 1


if __name__ == "__main__":
    sys.exit(main())
