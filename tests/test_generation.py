"""generate_text: greedy equals HF generate, constant cache memory, sampling knobs, streaming,
argument checks, loading from checkpoints."""

import pytest
import torch
from torch.optim.lr_scheduler import LambdaLR
from transformers import GPT2Config, GPT2LMHeadModel, Mamba2Config, Mamba2ForCausalLM

from hololm.data.tokenizers import byte_tokenizer
from hololm.errors import CheckpointError
from hololm.generation import IncrementalDecoder, generate_text, load_for_generation
from hololm.models.presets import build_model
from hololm.train.checkpoint import save_checkpoint

TOKENIZER = byte_tokenizer()
VOCAB = len(TOKENIZER)  # 257: bytes + <|endoftext|>
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}


def tiny(model_type: str, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    if model_type == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2)).eval()
    if model_type == "mamba2":
        config = Mamba2Config(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_heads=4,
                              head_dim=16, n_groups=1, state_size=16, chunk_size=16)
        return Mamba2ForCausalLM(config).eval()
    kwargs = {} if model_type == "hsn" else {**TINY, **overrides}
    return build_model(model_type, "tiny", VOCAB, 256, **kwargs).eval()


def prompt_ids(text: str) -> torch.Tensor:
    return torch.tensor([TOKENIZER(text)["input_ids"]])


@pytest.mark.parametrize("model_type,overrides,penalty", [
    ("holo", {"hybrid_ratio": 0}, 1.0),
    ("holo", {"hybrid_ratio": 2}, 1.3),
    ("hologpt", {}, 1.0),
    ("long", {}, 1.5),
    ("hsn", {}, 1.0),
    ("gpt2", {}, 1.2),
    ("mamba2", {}, 1.0),  # its cache is passed as cache_params
])
def test_greedy_equals_hf_generate(model_type, overrides, penalty):
    model = tiny(model_type, **overrides)
    out = generate_text(model, TOKENIZER, "The cat", max_new_tokens=30, temperature=0,
                        repetition_penalty=penalty, stop_at_eos=False)
    x = prompt_ids("The cat")
    with torch.no_grad():
        ref = model.generate(x, max_new_tokens=30, do_sample=False, repetition_penalty=penalty,
                             pad_token_id=TOKENIZER.eos_token_id)
    assert out.token_ids == ref[0, x.shape[1]:].tolist()
    assert out.text == TOKENIZER.decode(out.token_ids, skip_special_tokens=True)


def test_stops_at_eos_without_emitting_it():
    model = tiny("holo", hybrid_ratio=0)
    full = generate_text(model, TOKENIZER, "Hello", max_new_tokens=60, temperature=0,
                         stop_at_eos=False).token_ids
    eos = TOKENIZER.eos_token_id
    assert eos in full  # this seed's greedy continuation of "Hello" reaches EOS
    stopped = generate_text(model, TOKENIZER, "Hello", max_new_tokens=60, temperature=0)
    assert stopped.token_ids == full[:full.index(eos)]


def test_cache_memory_constant_for_pure_holographic_models():
    model = tiny("holo", hybrid_ratio=0)
    sizes = [generate_text(model, TOKENIZER, "Once upon a time", max_new_tokens=n, seed=0,
                           stop_at_eos=False).cache_bytes for n in (10, 200)]
    assert sizes[0] == sizes[1] == model.state_bytes(1, 1)
    hybrid = tiny("holo", hybrid_ratio=2)  # the attention layer's KV cache grows
    sizes = [generate_text(hybrid, TOKENIZER, "Once", max_new_tokens=n, seed=0,
                           stop_at_eos=False).cache_bytes for n in (10, 200)]
    assert sizes[1] > sizes[0]


def test_repetition_penalty_changes_the_output():
    model = tiny("holo", hybrid_ratio=0)
    plain, penalised = (generate_text(model, TOKENIZER, "aaaa", max_new_tokens=40, temperature=0,
                                      repetition_penalty=p, stop_at_eos=False).token_ids
                        for p in (1.0, 3.0))
    assert plain != penalised
    assert len(set(penalised)) > len(set(plain))  # penalising repeats spreads the tokens


def test_sampling_is_seeded_and_temperature_top_k_matter():
    model = tiny("hologpt")
    kw = {"max_new_tokens": 40, "stop_at_eos": False}
    a = generate_text(model, TOKENIZER, "seed", seed=1, **kw).token_ids
    assert a == generate_text(model, TOKENIZER, "seed", seed=1, **kw).token_ids
    assert a != generate_text(model, TOKENIZER, "seed", seed=2, **kw).token_ids
    greedy = generate_text(model, TOKENIZER, "seed", temperature=0, **kw).token_ids
    assert generate_text(model, TOKENIZER, "seed", seed=3, top_k=1, **kw).token_ids == greedy


def test_streaming_delivers_the_final_text(capsys):
    model = tiny("holo", hybrid_ratio=0)
    pieces = []
    out = generate_text(model, TOKENIZER, "Hi", max_new_tokens=80, seed=0, temperature=1.0,
                        top_k=0, top_p=1.0, stream=pieces.append, stop_at_eos=False)
    assert len(pieces) > 1 and "".join(pieces) == out.text
    printed = generate_text(model, TOKENIZER, "Hi", max_new_tokens=80, seed=0, temperature=1.0,
                            top_k=0, top_p=1.0, stream=True, stop_at_eos=False)
    assert capsys.readouterr().out == printed.text == out.text


def test_incremental_decoder_never_splits_a_character():
    text = "héllo wörld — 日本語 ✓ end"
    decoder = IncrementalDecoder(TOKENIZER)
    pieces = [decoder.push(i) for i in TOKENIZER(text)["input_ids"]] + [decoder.flush()]
    assert "".join(pieces) == text
    assert not any("\ufffd" in piece for piece in pieces)


def test_empty_prompt_starts_from_the_bos_token():
    model = tiny("long")
    out = generate_text(model, TOKENIZER, "", max_new_tokens=12, temperature=0,
                        stop_at_eos=False)
    start = torch.tensor([[TOKENIZER.bos_token_id]])
    with torch.no_grad():
        ref = model.generate(start, attention_mask=torch.ones_like(start), max_new_tokens=12,
                             do_sample=False,
                             pad_token_id=TOKENIZER.eos_token_id)
    assert out.prompt_tokens == 1 and out.token_ids == ref[0, 1:].tolist()


@pytest.mark.parametrize("kwargs,name", [
    ({"temperature": -0.1}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_k": -1}, "top_k"),
    ({"top_k": 2.5}, "top_k"),
    ({"repetition_penalty": 0.0}, "repetition_penalty"),
    ({"max_new_tokens": 0}, "max_new_tokens"),
])
def test_bad_arguments_raise_value_error_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        generate_text(tiny("hologpt"), TOKENIZER, "x", **kwargs)


def _save_step(checkpoint_dir, model, step):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    save_checkpoint(checkpoint_dir, model, TOKENIZER, optimizer, LambdaLR(optimizer, lambda s: 1),
                    sampler_state={}, step=step, train_config={})


def test_load_for_generation_takes_the_latest_step(tmp_path):
    old, new = tiny("holo", hybrid_ratio=0), tiny("holo", hybrid_ratio=0)
    with torch.no_grad():
        for p in new.parameters():
            p.add_(0.1 * torch.randn_like(p))
    _save_step(tmp_path, old, 3)
    _save_step(tmp_path, new, 12)
    model, tokenizer = load_for_generation(tmp_path)
    x = prompt_ids("abc")
    assert not model.training
    assert torch.equal(model(x).logits, new(x).logits)
    assert tokenizer.decode(tokenizer("héllo")["input_ids"]) == "héllo"
    step_model, _ = load_for_generation(tmp_path / "step_3")
    assert torch.equal(step_model(x).logits, old(x).logits)


def test_missing_or_corrupt_checkpoints_raise_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_for_generation(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_for_generation(tmp_path)
    _save_step(tmp_path, tiny("hologpt"), 1)
    weights = tmp_path / "step_1" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="model.safetensors is corrupt") as err:
        load_for_generation(tmp_path)  # the recorded checksum catches it first
    assert "\n" not in str(err.value)
