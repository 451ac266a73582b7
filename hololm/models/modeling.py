"""Hugging Face front doors: `PreTrainedModel` subclasses over the shared backbone, with a
recurrent cache (`HoloCache`) so that prefill + token-by-token decoding equals the full pass."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from hololm.models.backbone import Backbone, Block
from hololm.models.cache import HoloCache
from hololm.models.configs import HoloConfig, HoloGPTConfig, HoloLMConfig, LongConfig
from hololm.models.inputs import (
    validate_attention_mask,
    validate_cache,
    validate_input_ids,
    validate_labels,
)


def _ours(module: nn.Module) -> bool:
    return type(module).__module__.startswith("hololm.")


def _fully_loaded(module: nn.Module) -> bool:
    """True when from_pretrained already set every parameter and buffer (HF flags them)."""
    tensors = [*module.parameters(), *module.buffers()]
    return bool(tensors) and all(getattr(t, "_is_hf_initialized", False) for t in tensors)


class HoloLMPreTrainedModel(PreTrainedModel):
    config_class = HoloLMConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["Block"]

    def _initialize_weights(self, module: nn.Module, is_custom_code: bool = False) -> None:
        # HF skips modules without direct parameters in custom code; our blocks and layers need
        # their turn (after their children's) for the residual scaling and gate biases
        if _ours(module):
            is_custom_code = False
        super()._initialize_weights(module, is_custom_code)

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)  # normal(0, 0.02) Linear / Conv / Embedding, unit norms
        if isinstance(module, Block):  # residual branches: std / sqrt(2·n_layers) (GPT-2)
            std = self.config.initializer_range / math.sqrt(2 * self.config.num_hidden_layers)
            for branch in (module.mixer, module.mlp):
                nn.init.normal_(branch.o_proj.weight, std=std)  # HF's guard keeps loaded ones
        if _ours(module) and hasattr(module, "reset_parameters") and not _fully_loaded(module):
            module.reset_parameters()  # gate / decay biases, phasor frequencies, filters

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # we build our own HoloCache


class HoloLMForCausalLM(HoloLMPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: HoloLMConfig):
        super().__init__(config)
        self.model = Backbone(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def state_bytes(self, batch_size: int, context_len: int) -> int:
        """Bytes of the generation cache after `context_len` tokens, summed over layers."""
        return sum(layer.mixer.state_bytes(batch_size, context_len) for layer in self.model.layers)

    def forward(self, input_ids: torch.LongTensor | None = None,
                attention_mask: torch.Tensor | None = None,
                labels: torch.LongTensor | None = None,
                past_key_values: HoloCache | None = None, use_cache: bool | None = None,
                logits_to_keep: int = 0, return_dict: bool | None = None,
                **kwargs) -> CausalLMOutputWithPast:
        """input_ids [B, T] → logits [B, T, V]; labels [B, T] (-100 = ignore) give `.loss`,
        shifted inside. `past_key_values` (a HoloCache) continues a sequence."""
        if kwargs.get("inputs_embeds") is not None:
            raise ValueError("inputs_embeds is not supported; pass input_ids")
        validate_input_ids(input_ids, self.config.vocab_size)
        cache = past_key_values
        if cache is not None and not isinstance(cache, HoloCache):
            raise TypeError(f"past_key_values must be a HoloCache (from a previous call with "
                            f"use_cache=True), got {type(cache).__name__}")
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if cache is None and use_cache:
            cache = HoloCache(len(self.model.layers))
        position = cache.seen_tokens if cache is not None else 0
        if cache is not None:
            validate_cache(cache, self, input_ids.shape[0])
        validate_attention_mask(attention_mask, input_ids, position)
        validate_labels(labels, input_ids, self.config.vocab_size)

        states = cache.states if cache is not None else [None] * len(self.model.layers)
        hidden, states = self.model(input_ids, states, position)
        if cache is not None:
            cache.states, cache.seen_tokens = states, position + input_ids.shape[1]

        keep = slice(-logits_to_keep, None) if logits_to_keep else slice(None)
        logits = self.lm_head(hidden[:, keep])
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(),
                                   labels[:, 1:].flatten().to(logits.device), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits,
                                      past_key_values=cache if use_cache else None)


class HoloForCausalLM(HoloLMForCausalLM):
    """Holo-Transformer causal LM (seeds 000/001): `model(input_ids, labels=...)` gives
    `.loss` and `.logits`."""

    config_class = HoloConfig


class LongForCausalLM(HoloLMForCausalLM):
    """LongAttention V5 causal LM (seed 002)."""

    config_class = LongConfig


class HoloGPTForCausalLM(HoloLMForCausalLM):
    """HoloGPT causal LM (seed 003): gated outer-product matrix memories, O(1) decode state."""

    config_class = HoloGPTConfig


class HoloTransformer(HoloForCausalLM):
    """Seed 000's front door: `HoloTransformer(config)(input_ids)` returns the logits tensor
    [B, T, V]. Use `HoloForCausalLM` for losses, caches and `generate()`."""

    def forward(self, input_ids: torch.LongTensor, **kwargs) -> torch.Tensor:
        kwargs.setdefault("use_cache", False)
        return super().forward(input_ids, **kwargs).logits
