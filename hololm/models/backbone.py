"""One backbone for every family: embeddings, a stack of pre-norm blocks (token mixer + MLP, each
a residual branch, or HoloSpectralNet's three-branch block), a final norm. The kind of each layer
is chosen by `config.mixer_types`."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from hololm.layers.attention import CausalSelfAttention
from hololm.layers.base import Padding, State
from hololm.layers.long import LongAttentionV5
from hololm.layers.matrix import MatrixMemory
from hololm.layers.mlp import MLPS, swiglu_width
from hololm.layers.phasor import PhasorAttention
from hololm.layers.rotary import RotaryEmbedding
from hololm.layers.spectral import HoloSpectralBlock
from hololm.models.configs import HoloLMConfig


def build_mixer(kind: str, config: HoloLMConfig) -> nn.Module:
    """The one factory of token mixers: layer `kind` with `config`'s fields. An "hsn" layer is
    HoloSpectralNet's whole block (it brings its own norms and channel mix instead of an MLP)."""
    d, heads = config.hidden_size, config.num_attention_heads
    if kind == "attention":
        return CausalSelfAttention(d, heads, rope_base=config.rope_theta)
    if kind == "holo":
        return PhasorAttention(d, config.hd_dim, heads, phasor_seed=config.phasor_seed,
                               multi_scale=config.multi_scale, use_position=config.use_position,
                               dual_path=config.dual_path, key_conv_size=config.key_conv_size,
                               learned_query_offset=config.learned_query_offset,
                               output_mode=config.output_mode, conv_targets=config.conv_targets,
                               num_copies=config.num_copies,
                               learned_decay=config.learned_decay)
    if kind == "long":
        return LongAttentionV5(d, heads, conv_size=config.conv_size,
                               gate_init_bias=config.gate_init_bias,
                               decay_min=config.decay_min, decay_max=config.decay_max,
                               norm_eps=config.norm_eps)
    if kind == "hologpt":
        return MatrixMemory(d, config.matrix_dim, heads, forget_bias=config.forget_bias,
                            write_bias=config.write_bias,
                            read_before_write=config.read_before_write,
                            conv_size=config.conv_size, update=config.update)
    if kind == "hsn":
        return HoloSpectralBlock(d, config.max_seq_len, config.rank, decay=config.decay,
                                 norm_eps=config.norm_eps, conv_size=config.conv_size)
    raise ValueError(f"unknown layer kind {kind!r}")


def build_layer(kind: str, config: HoloLMConfig) -> nn.Module:
    """One layer of the stack: a pre-norm `Block` around the mixer, or HoloSpectralNet's block."""
    if kind == "hsn":
        return build_mixer(kind, config)
    return Block(kind, config)


def build_norm(config: HoloLMConfig) -> nn.Module:
    if config.norm_type == "rmsnorm":
        return nn.RMSNorm(config.hidden_size, eps=config.norm_eps)
    return nn.LayerNorm(config.hidden_size, eps=config.norm_eps)


def mlp_width(config: HoloLMConfig) -> int:
    if config.mlp_type == "swiglu":
        return swiglu_width(config.hidden_size, config.expansion_ratio)
    return round(config.hidden_size * config.expansion_ratio)


class Block(nn.Module):
    def __init__(self, kind: str, config: HoloLMConfig):
        super().__init__()
        self.kind = kind
        self.mixer_norm = build_norm(config)
        self.mixer = build_mixer(kind, config)
        self.mlp_norm = build_norm(config)
        self.mlp = MLPS[config.mlp_type](config.hidden_size, mlp_width(config))

    def forward(self, x: torch.Tensor, state: State | None, position: int,
                pad: Padding | None = None) -> tuple[torch.Tensor, State]:
        y, state = self.mixer(self.mixer_norm(x), state, position, pad=pad)
        x = x + y
        return x + self.mlp(self.mlp_norm(x)), state

    def state_bytes(self, batch_size: int, context_len: int) -> int:
        return self.mixer.state_bytes(batch_size, context_len)


class Backbone(nn.Module):
    """input_ids [B, T] → hidden states [B, T, d], continuing from per-layer `states`: one layer
    per `config.mixer_types` entry; `config.rotate_embeddings` rotates the embeddings by
    position (HoloSpectralNet's RoPE)."""

    def __init__(self, config: HoloLMConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.rotary = (RotaryEmbedding(config.hidden_size, base=config.rope_theta)
                       if config.rotate_embeddings else None)
        self.layers = nn.ModuleList([build_layer(kind, config) for kind in config.mixer_types])
        self.norm = build_norm(config)
        # both set by PreTrainedModel.activation_checkpointing_enable
        self.gradient_checkpointing = False
        self._gradient_checkpointing_func = partial(checkpoint, use_reentrant=False)

    def forward(self, input_ids: torch.Tensor, states: list[State | None], position: int,
                pad: Padding | None = None, output_hidden_states: bool = False
                ) -> tuple[torch.Tensor, list[State], tuple[torch.Tensor, ...] | None]:
        """→ (final hidden states [B, T, d], new per-layer states, and with
        `output_hidden_states` every layer's input plus the final normed output, as HF's)."""
        x = self.embed_tokens(input_ids)  # [B, T, d]
        if self.rotary is not None:
            x = self.rotary(x, position if pad is None else pad.positions)
        new_states, hidden = [], []
        try:
            for layer, state in zip(self.layers, states, strict=True):
                hidden.append(x)
                if self.gradient_checkpointing and self.training:
                    x, state = self._gradient_checkpointing_func(layer, x, state, position, pad)
                else:
                    x, state = layer(x, state, position, pad)
                new_states.append(state)
            x = self.norm(x)
            return x, new_states, (*hidden, x) if output_hidden_states else None
        except (RuntimeError, TypeError) as err:
            self._refuse_mixed_weights(err)
            raise

    def _refuse_mixed_weights(self, err: Exception) -> None:
        """A model cast in part (one layer `.to(torch.bfloat16)`) fails inside torch with a
        RuntimeError about mixed dtypes, or in a layer's own input check; name the weight and
        the fix for the whole model instead. Checked only once something failed: a check per
        forward costs ~3 % of a decoding step."""
        expect = self.embed_tokens.weight.dtype
        for name, weight in self.named_parameters():
            if weight.dtype != expect:
                raise TypeError(f"the model's weights mix dtypes: {name} is {weight.dtype}, the "
                                f"embeddings {expect}; cast the whole model (model.to("
                                f"{weight.dtype})) or run under autocast") from err
