"""The seeds' quick starts, in our names and at small sizes, plus configs and presets."""

import pytest
import torch
from transformers import (
    AutoConfig,
    GPT2LMHeadModel,
    LlamaForCausalLM,
    Mamba2ForCausalLM,
    PreTrainedTokenizerFast,
)

import hololm
from hololm import (
    HoloConfig,
    HoloForCausalLM,
    HoloTransformer,
    LongConfig,
    LongForCausalLM,
    get_model_and_tokenizer,
)
from hololm.data.tokenizers import TokenizerUnavailableError
from hololm.models.presets import SIZES, build_model
from tests.helpers import assert_close


def test_seed000_quick_start_holo_transformer_returns_logits():
    config = HoloConfig(vocab_size=500, dim=64, n_layers=8, n_heads=4, hd_dim=128,
                        max_seq_len=4096)
    model = HoloTransformer(config).to(torch.bfloat16)
    assert config.mixer_types.count("attention") == 1  # default hybrid_ratio=8: layer 8
    x = torch.randint(0, 500, (1, 300))
    with torch.no_grad():
        logits = model(x)
    assert isinstance(logits, torch.Tensor) and logits.shape == (1, 300, 500)
    assert torch.isfinite(logits.float()).all()


def test_seed001_quick_start_holo_for_causal_lm():
    config = HoloConfig(vocab_size=320, hidden_size=64, hd_dim=128, num_hidden_layers=2)
    model = HoloForCausalLM(config).bfloat16()
    ids = torch.randint(0, 320, (2, 50))
    outputs = model(input_ids=ids, labels=ids)
    outputs.loss.backward()
    assert outputs.logits.shape == (2, 50, 320) and torch.isfinite(outputs.loss)


def test_seed002_quick_start_long_config_and_loader():
    config = LongConfig(vocab_size=512, hidden_size=96, num_hidden_layers=4, num_heads=4,
                        expansion_ratio=8 / 3, hybrid_ratio=4, gate_init_bias=0.0)
    model = LongForCausalLM(config)
    assert [layer.kind for layer in model.model.layers] == ["long"] * 3 + ["attention"]
    assert model.model.layers[0].mlp.o_proj.in_features == 256  # ceil(96·8/3) -> multiple of 256
    model, tokenizer = get_model_and_tokenizer(model_type="long", model_size="tiny",
                                               vocab_size=None, seq_len=256, device="cpu",
                                               tokenizer="byte")
    assert isinstance(tokenizer, PreTrainedTokenizerFast)
    assert model.config.vocab_size == len(tokenizer) == 257
    ids = torch.tensor([tokenizer("hello")["input_ids"]])
    out = model.generate(ids, max_new_tokens=4, do_sample=False,
                         pad_token_id=tokenizer.eos_token_id)
    assert out.shape == (1, 9)


@pytest.mark.parametrize("model_type,cls", [("holo", HoloForCausalLM), ("long", LongForCausalLM),
                                            ("hologpt", hololm.HoloGPTForCausalLM),
                                            ("hsn", hololm.HoloSpectralForCausalLM),
                                            ("gpt2", GPT2LMHeadModel),
                                            ("llama", LlamaForCausalLM),
                                            ("mamba2", Mamba2ForCausalLM)])
def test_every_model_type_builds_and_trains_one_step(model_type, cls):
    model = build_model(model_type, "tiny", vocab_size=300, seq_len=64)
    width = 128 if model_type == "hsn" else SIZES["tiny"]["hidden_size"]  # hsn: the seed's sizes
    assert type(model) is cls and model.config.hidden_size == width
    ids = torch.randint(0, 300, (2, 64))
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss)


def test_unknown_presets_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="unknown model_type 'rwkv'.*holo"):
        build_model("rwkv", "tiny", 100, 64)
    with pytest.raises(ValueError, match="unknown model_size 'huge'.*tiny"):
        get_model_and_tokenizer("long", "huge", tokenizer="byte")
    with pytest.raises(ValueError, match="smaller than the tokenizer"):
        get_model_and_tokenizer("long", "tiny", vocab_size=100, tokenizer="byte")


def test_hub_tokenizer_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hololm.data.hub.hub_reachable.cache_clear()
    try:
        with pytest.raises(TokenizerUnavailableError, match="tokenizer='byte'"):
            get_model_and_tokenizer("long", "tiny", tokenizer="surely-not-cached/tokenizer")
    finally:
        hololm.data.hub.hub_reachable.cache_clear()


def test_config_spellings_and_conflicts():
    a = HoloConfig(dim=64, n_layers=3, n_heads=4, hd_dim=128, max_seq_len=999)
    b = HoloConfig(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, hd_dim=128,
                   max_position_embeddings=999)
    assert a.to_dict() == b.to_dict() and a.dim == 64 and a.max_seq_len == 999
    assert LongConfig(num_heads=6, hidden_size=96).num_attention_heads == 6
    with pytest.raises(ValueError, match="disagree"):
        HoloConfig(dim=64, hidden_size=32)
    with pytest.raises(ValueError, match="unknown layer type 'mamba'"):
        LongConfig(num_hidden_layers=2, mixer_types=["long", "mamba"])
    with pytest.raises(ValueError, match="hd_dim"):
        HoloConfig(hidden_size=64, num_attention_heads=4, hd_dim=66)
    with pytest.raises(ValueError, match="divisible"):
        LongConfig(hidden_size=100, num_heads=3)
    with pytest.raises(ValueError, match="vocab_size must be a positive int"):
        LongConfig(vocab_size=0)


def test_explicit_layer_list_and_auto_config():
    config = LongConfig(hidden_size=64, num_heads=4, num_hidden_layers=3,
                        mixer_types=["attention", "long", "attention"])
    model = LongForCausalLM(config)
    assert [layer.kind for layer in model.model.layers] == ["attention", "long", "attention"]
    assert type(AutoConfig.for_model("holo")) is HoloConfig
    assert type(AutoConfig.for_model("long")) is LongConfig


def test_seed003_hologpt_continues_from_states():
    model = hololm.HoloGPT(vocab_size=200, embed_dim=64, matrix_dim=16, layers=2).eval()
    idx = torch.randint(0, 200, (2, 50))
    with torch.no_grad():
        full, states = model(idx)
        first, mid = model(idx[:, :23])
        second, end = model(idx[:, 23:], mid)
        again, _ = model(idx[:, 23:], mid)  # the same states continue twice: not mutated
    assert full.shape == (2, 50, 200) and states.seen_tokens == 50 and mid.seen_tokens == 23
    assert_close(torch.cat([first, second], 1), full, 1e-5, "split with states")
    assert torch.equal(again, second)
    for a, b in zip(end.states, states.states, strict=True):
        assert_close(a["memory"], b["memory"], 1e-5, "final memory")
    assert model.config.num_attention_heads == 4  # embed_dim // matrix_dim
    with pytest.raises(TypeError, match="HoloCache"):
        model(idx, states=[torch.zeros(1)])


def test_fast_holo_block_is_pre_norm_memory_plus_gated_ffn():
    block = hololm.FastHoloBlock(64, matrix_dim=16)
    assert block.kind == "hologpt" and block.mlp.activation is torch.nn.functional.gelu
    x = torch.randn(2, 9, 64)
    y, state = block(x, None, 0)
    assert y.shape == x.shape and state["memory"].shape == (2, 4, 16, 16)


@pytest.mark.parametrize("model_type", ["holo", "long", "hologpt", "hsn", "gpt2", "llama",
                                        "mamba2"])
def test_common_size_overrides_work_for_every_type(model_type):
    model = build_model(model_type, "small", 300, 64, hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=2)
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2
