"""Parameter counts and generation-cache sizes of every preset, computed by code on the meta
device (nothing is allocated): `python -m hololm.bench.params --vocab_size 50257`."""

from __future__ import annotations

import argparse

import torch
from transformers import Mamba2ForCausalLM, PreTrainedModel

from hololm.models.presets import build_model
from hololm.models.registry import BASELINES, MEMORIES, SIZES, VARIANTS
from hololm.originals import hsn_base, hsn_small, hsn_tiny


def cache_bytes(model: PreTrainedModel, context_len: int, dtype_bytes: int = 4) -> int:
    """Generation-cache bytes for batch 1 after `context_len` tokens: summed layer states for
    hololm models; the KV cache (GPT-2, Llama) or conv + SSM states (Mamba-2) for baselines."""
    if hasattr(model, "state_bytes"):
        return model.state_bytes(1, context_len)
    c = model.config
    if isinstance(model, Mamba2ForCausalLM):
        inner = c.num_heads * c.head_dim
        conv = (inner + 2 * c.n_groups * c.state_size) * c.conv_kernel  # HF keeps k inputs
        return c.num_hidden_layers * (inner * c.state_size + conv) * dtype_bytes
    return 2 * c.num_hidden_layers * context_len * c.hidden_size * dtype_bytes


def parameter_table(vocab_size: int, seq_len: int, contexts: tuple[int, ...] = (1024, 65536)
                    ) -> str:
    """Markdown table of parameter counts and cache sizes, computed on the meta device."""
    head = ("| model_type | size | parameters | non-embedding | layers (mixers) | "
            + " | ".join(f"cache @ {n:,} tokens" for n in contexts) + " |")
    lines = [head, "|" + "---|" * (5 + len(contexts))]
    for model_type in (*MEMORIES, *VARIANTS, *BASELINES):
        for size in SIZES:
            with torch.device("meta"):
                model = build_model(model_type, size, vocab_size, seq_len)
            total = sum(p.numel() for p in model.parameters())
            embed = model.get_input_embeddings().weight.numel()
            kinds = getattr(model.config, "mixer_types", None)
            layout = (", ".join(f"{kinds.count(k)} {k}" for k in dict.fromkeys(kinds))
                      if kinds else str(model.config.num_hidden_layers))
            caches = " | ".join(f"{cache_bytes(model, n) / 2**20:,.2f} MiB" for n in contexts)
            lines.append(f"| {model_type} | {size} | {total / 1e6:,.2f}M | "
                         f"{(total - embed) / 1e6:,.2f}M | {layout} | {caches} |")
    return "\n".join(lines)


HSN_CLAIMS = {"hsn_tiny": "~400K", "hsn_small": "~1.5M", "hsn_base": "~8M"}  # its README


def hsn_table(vocabs: tuple[int, ...] = (32000, 1000)) -> str:
    """True parameter counts of the HoloSpectralNet presets next to HoloSpectralNet's claims."""
    head = ("| preset | HoloSpectralNet claims (vocab 32000) | "
            + " | ".join(f"parameters @ vocab {v}" for v in vocabs) + " | without embeddings |")
    lines = [head, "|" + "---|" * (3 + len(vocabs))]
    for name, preset in (("hsn_tiny", hsn_tiny), ("hsn_small", hsn_small),
                         ("hsn_base", hsn_base)):
        counts = []
        for vocab in vocabs:
            with torch.device("meta"):
                model = preset(vocab_size=vocab)
            counts.append(model.count_parameters())
        body = model.count_parameters() - model.get_input_embeddings().weight.numel()
        lines.append(f"| {name} | {HSN_CLAIMS[name]} | "
                     + " | ".join(f"{c:,}" for c in counts) + f" | {body:,} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m hololm.bench.params",
        description="Print parameter counts and generation-cache sizes of every preset "
                    "(computed on the meta device: nothing is allocated).")
    parser.add_argument("--vocab_size", type=int, default=50257,
                        help="vocabulary size (default: 50257, GPT-2's)")
    parser.add_argument("--seq_len", type=int, default=2048,
                        help="context length the models are built for (default: 2048)")
    parser.add_argument("--hsn", action="store_true",
                        help="print the HoloSpectralNet presets at vocab 32000 and 1000 next to "
                             "HoloSpectralNet's claimed counts instead")
    args = parser.parse_args(argv)
    print(hsn_table() if args.hsn else parameter_table(args.vocab_size, args.seq_len))


if __name__ == "__main__":
    main()
