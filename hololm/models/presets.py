"""`build_model`, the one path from a registry name (family, variant or HF baseline) and a named
size to a fresh model, and `get_model_and_tokenizer` (LongAttention V5's loader). The baselines
(GPT-2, Llama, Mamba-2) are built from configs at matched width and depth — no download."""

from __future__ import annotations

import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    Mamba2Config,
    Mamba2ForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from hololm.data.tokenizers import load_tokenizer
from hololm.layers.mlp import swiglu_width
from hololm.models.configs import SPELLINGS, HoloLMConfig
from hololm.models.registry import BASELINES, NAMES, SIZES, config_fields, family_of
from hololm.models.vocabulary import restrict_generation_to

BASELINE_CONFIGS = {"gpt2": GPT2Config, "llama": LlamaConfig, "mamba2": Mamba2Config}


def build_config(model_type: str, model_size: str, vocab_size: int, seq_len: int,
                 **overrides) -> HoloLMConfig:
    """The config of a hololm family or variant at a named size; `overrides` go to it."""
    family, _ = family_of(model_type)
    _check(model_type, model_size, family.config, overrides)
    # overrides win over the named size (e.g. a narrower model), the name's fields over both
    fields = {"vocab_size": vocab_size, **dict.fromkeys(family.seq_len_fields, seq_len),
              **family.sizes[model_size], **overrides}
    return family.config(**config_fields(model_type, fields))


def build_model(model_type: str, model_size: str, vocab_size: int, seq_len: int,
                **overrides) -> PreTrainedModel:
    """A freshly initialised model of a family, variant or HF baseline (`NAMES`) at a named
    size; `overrides` go to its config (hidden_size, num_hidden_layers and num_attention_heads
    work for every name, baselines included)."""
    if model_type not in NAMES:
        raise ValueError(f"unknown model_type {model_type!r}; choose from {NAMES}")
    if model_type not in BASELINES:
        config = build_config(model_type, model_size, vocab_size, seq_len, **overrides)
        return family_of(model_type)[0].model(config)
    _check(model_type, model_size, BASELINE_CONFIGS[model_type], overrides)
    fields = {"max_position_embeddings": seq_len, "vocab_size": vocab_size, **SIZES[model_size],
              **overrides}
    d = fields.pop("hidden_size")
    n_layers, heads = fields.pop("num_hidden_layers"), fields.pop("num_attention_heads")
    if model_type == "gpt2":  # GPT-2's own names; bos/eos 50256 may not fit a small vocab
        fields["n_positions"] = fields.pop("max_position_embeddings")
        return GPT2LMHeadModel(GPT2Config(**{"n_embd": d, "n_layer": n_layers, "n_head": heads,
                                             "bos_token_id": None, "eos_token_id": None,
                                             **fields}))
    if model_type == "llama":
        return LlamaForCausalLM(LlamaConfig(**{
            "hidden_size": d, "num_hidden_layers": n_layers, "num_attention_heads": heads,
            "num_key_value_heads": heads, "intermediate_size": swiglu_width(d, 8 / 3),
            "tie_word_embeddings": True, **fields}))
    fields.pop("max_position_embeddings")  # Mamba-2 has no positions
    # Mamba-2 defaults: expand 2, 64-wide heads (one head of expand·d below that), one group;
    # the heads follow an `expand` override so that num_heads·head_dim = expand·d still holds
    expand = fields.pop("expand", 2)
    head_dim = min(64, expand * d)
    return Mamba2ForCausalLM(Mamba2Config(**{
        "hidden_size": d, "num_hidden_layers": n_layers, "expand": expand,
        "num_heads": expand * d // head_dim, "head_dim": head_dim, "n_groups": 1,
        "state_size": 64, "chunk_size": 64, "tie_word_embeddings": True, **fields}))


def _check(model_type: str, model_size: str, config_class: type, overrides: dict) -> None:
    """A known size, and overrides that name config fields: a config takes any keyword and keeps
    it as an attribute, so a misspelt override (say `hiden_size`) would build a model of the
    default size without a word."""
    if model_size not in SIZES:
        raise ValueError(f"unknown model_size {model_size!r}; choose from {tuple(SIZES)}")
    known = (set(config_class().to_dict()) | set(config_class.attribute_map) | set(SPELLINGS)
             | set(SIZES["tiny"]) | {"max_position_embeddings"})
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown model_overrides {unknown} for model_type {model_type!r}; "
                         f"valid: {', '.join(sorted(known))}")


def get_model_and_tokenizer(model_type: str, model_size: str, vocab_size: int | None = None,
                            seq_len: int = 2048, device: str | torch.device = "cpu",
                            tokenizer: str | PreTrainedTokenizerBase = "gpt2", **overrides
                            ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """LongAttention V5's loader. `tokenizer` is "gpt2" (needs the hub once), "byte" (offline), a
    directory, or a tokenizer object; `vocab_size` defaults to the tokenizer's size and must be
    at least that."""
    tok = load_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
    vocab_size = len(tok) if vocab_size is None else vocab_size
    if vocab_size < len(tok):
        raise ValueError(f"vocab_size={vocab_size} is smaller than the tokenizer's {len(tok)} "
                         "tokens")
    model = build_model(model_type, model_size, vocab_size, seq_len, **overrides)
    restrict_generation_to(model, len(tok))
    return model.to(device), tok

