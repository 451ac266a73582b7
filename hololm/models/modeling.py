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
from hololm.models.configs import (
    HoloConfig,
    HoloGPTConfig,
    HoloLMConfig,
    HoloSpectralConfig,
    LongConfig,
)
from hololm.models.inputs import (
    documents_of,
    padding_of,
    validate_attention_mask,
    validate_cache,
    validate_input_ids,
    validate_labels,
    validate_position_ids,
)

# transformers >= 5.25 names the cache of a model's output `cache`, older releases
# `past_key_values`; filling the installed name keeps generate() reading it without a warning
CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ \
    else "past_key_values"


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
    _no_split_modules = ["Block", "HoloSpectralBlock"]

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
    accepts_loss_kwargs = True  # Trainer then passes num_items_in_batch (see causal_lm_loss)

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
        return sum(layer.state_bytes(batch_size, context_len) for layer in self.model.layers)

    def forward(self, input_ids: torch.LongTensor | None = None,
                attention_mask: torch.Tensor | None = None,
                position_ids: torch.LongTensor | None = None,
                labels: torch.LongTensor | None = None,
                cache: HoloCache | None = None, past_key_values: HoloCache | None = None,
                use_cache: bool | None = None, logits_to_keep: int = 0,
                output_hidden_states: bool | None = None, output_attentions: bool | None = None,
                return_dict: bool | None = None,
                num_items_in_batch: int | torch.Tensor | None = None,
                ) -> CausalLMOutputWithPast | tuple:
        """input_ids [B, T] → logits [B, T, V].

        labels [B, T] (-100 = ignore) give `.loss`, shifted inside: the mean over labelled
        tokens, or their sum divided by `num_items_in_batch` (what Trainer passes when it
        accumulates gradients). `cache` (`past_key_values` in transformers < 5.25; either name
        works) continues a sequence from a `HoloCache`. attention_mask [B, T] or [B, past + T]
        marks padding with 0: padding tokens are skipped, so each row's logits and state are
        those of its real tokens alone (pad on the left for generation, on the right for
        training). position_ids [B, T] (or [1, T]) pack several documents into a row, as
        Hugging Face's packed sequences do: a 0 starts a document, where every layer drops what
        it held and positions restart, so each document's logits are those of the document
        alone (a cache filled with position_ids needs them on every later call).
        `output_hidden_states` and `return_dict=False` behave as in HF's Llama;
        attention weights do not exist in a recurrent memory, so `output_attentions=True` is
        refused."""
        if cache is not None and past_key_values is not None:
            raise TypeError("pass the cache as `cache` or as `past_key_values`, not both")
        cache = past_key_values if cache is None else cache
        if output_attentions:
            raise ValueError("output_attentions=True: hololm's memories have no attention "
                             "weights to return")
        validate_input_ids(input_ids, self.config.vocab_size)
        if cache is not None and not isinstance(cache, HoloCache):
            raise TypeError(f"cache (past_key_values) must be a HoloCache (from a previous call "
                            f"with use_cache=True), got {type(cache).__name__}")
        use_cache = self.config.use_cache if use_cache is None else use_cache
        return_dict = self.config.return_dict if return_dict is None else return_dict
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if cache is None and use_cache:
            cache = HoloCache(len(self.model.layers))
        position = cache.seen_tokens if cache is not None else 0
        if cache is not None:
            validate_cache(cache, self, input_ids.shape[0])
        validate_attention_mask(attention_mask, input_ids, position)
        validate_labels(labels, input_ids, self.config.vocab_size)
        T = input_ids.shape[1]
        position_ids = validate_position_ids(position_ids, input_ids)
        pad = padding_of(attention_mask, cache.valid if cache is not None else None, position, T)
        pad = documents_of(pad, position_ids, cache.documents if cache is not None else None,
                           position, T)

        states = cache.states if cache is not None else [None] * len(self.model.layers)
        hidden, states, all_hidden = self.model(input_ids, states, position, pad,
                                                output_hidden_states)
        if cache is not None:
            cache.states, cache.seen_tokens = states, position + T
            if pad is not None:
                cache.valid = pad.keys
                cache.documents = pad.documents

        keep = slice(-logits_to_keep, None) if logits_to_keep else slice(None)
        logits = self.lm_head(hidden[:, keep])
        loss = None if labels is None else causal_lm_loss(logits, labels, num_items_in_batch)
        out = CausalLMOutputWithPast(loss=loss, logits=logits, hidden_states=all_hidden,
                                     **{CACHE_FIELD: cache if use_cache else None})
        return out if return_dict else out.to_tuple()


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor,
                   num_items_in_batch: int | torch.Tensor | None) -> torch.Tensor:
    """Next-token cross-entropy in float32: position t predicts labels[t + 1]. The mean over
    labelled tokens, or the sum over `num_items_in_batch` (the labelled tokens of every
    micro-batch of an accumulated step, so the steps' losses add up to the large batch's)."""
    flat_logits = logits[:, :-1].flatten(0, 1).float()
    targets = labels[:, 1:].flatten().to(logits.device)
    if num_items_in_batch is None:
        return F.cross_entropy(flat_logits, targets, ignore_index=-100)
    total = F.cross_entropy(flat_logits, targets, ignore_index=-100, reduction="sum")
    if isinstance(num_items_in_batch, torch.Tensor):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


class HoloForCausalLM(HoloLMForCausalLM):
    """Holo-Transformer causal LM: `model(input_ids, labels=...)` gives
    `.loss` and `.logits`."""

    config_class = HoloConfig


class LongForCausalLM(HoloLMForCausalLM):
    """LongAttention V5 causal LM."""

    config_class = LongConfig


class HoloGPTForCausalLM(HoloLMForCausalLM):
    """HoloGPT causal LM: gated outer-product matrix memories, O(1) decode state."""

    config_class = HoloGPTConfig


class HoloSpectralForCausalLM(HoloLMForCausalLM):
    """HoloSpectralNet causal LM; its cache holds per-layer {"hologram", "buffer"} states."""

    config_class = HoloSpectralConfig

    def count_parameters(self) -> int:
        """Trainable parameters, tied embedding / head counted once."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
