"""What is HoloSpectralNet's own (the shared family fixtures in conftest.py cover it as a model
like the others): the gate's filter length (causal past max_seq_len, where HoloSpectralNet's own
gate leaks; decoding exact far past it; a bounded state), its call forms, presets and true
parameter counts, its config spellings and its init."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig

from hololm.layers.spectral import SpectralGate
from hololm.models import HoloSpectralConfig, HoloSpectralForCausalLM
from hololm.models.cache import cache_of
from hololm.originals import HoloSpectralNet, hsn_base, hsn_small, hsn_tiny
from tests.helpers import assert_close
from tests.models.helpers import VOCAB, ids

N = 32  # max_seq_len, the gate's filter length; tests run past it


@torch.no_grad()
def randomise(model: torch.nn.Module) -> torch.nn.Module:
    """Trained-like parameters: gate logits of both signs (the init g = 0 is an identity filter,
    under which a leaking gate would look causal), random keys, scales and norm affines."""
    for name, p in model.named_parameters():
        if name.endswith(".gate"):
            p.copy_(2 * torch.randn_like(p))
        elif name.endswith("_key"):
            p.copy_(torch.randn_like(p) / math.sqrt(p.numel()))
        elif name.endswith(".scale") or "norm" in name:
            p.add_(0.5 * torch.randn_like(p))
    return model


def tiny_hsn(decay: float | None = None, **overrides) -> HoloSpectralForCausalLM:
    kwargs = dict(vocab_size=VOCAB, dim=32, depth=3, max_seq_len=N, rank=8, decay=decay)
    return HoloSpectralForCausalLM(HoloSpectralConfig(**{**kwargs, **overrides})).eval()


@pytest.fixture(params=[None, 0.9], ids=["cumsum", "decay"])
def model(request):
    torch.manual_seed(0)
    return randomise(tiny_hsn(request.param))


def _seed_gate_forward(self, x, state=None, position=0, pad=None):
    """HoloSpectralNet's SpectralGate (rfft over time, gate, irfft), as a drop-in forward."""
    x_freq = torch.fft.rfft(x, dim=1)
    x_gated = x_freq * torch.sigmoid(self.gate[: x_freq.shape[1]]).unsqueeze(-1)
    return torch.fft.irfft(x_gated, n=x.shape[1], dim=1), {}


def _max_change(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a − b| relative to max |b|."""
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@torch.no_grad()
def test_causal_by_perturbation(model, dtype, tol):
    """Logits up to t do not move when tokens after t change, at T = 70 > max_seq_len — up to the
    rounding of the gate's FFT convolution (relative to the logits' scale), while the changed
    positions move by O(1)."""
    model = model.to(dtype)
    x = ids(2, 70)
    ref = model(x).logits
    for t in (0, 17, 31, 68):
        y = x.clone()
        y[:, t + 1:] = (y[:, t + 1:] + 1 + torch.arange(69 - t)) % VOCAB
        out = model(y).logits
        assert _max_change(out[:, :t + 1], ref[:, :t + 1]) <= tol, f"future leaked into t<={t}"
        assert _max_change(out[:, t + 1:], ref[:, t + 1:]) > 1e-3


@torch.no_grad()
def test_the_seed_spectral_gate_makes_the_model_leak(model, monkeypatch):
    """The same model with the seed's gate: changing only the last token moves the first logits."""
    x = ids(2, N)
    y = x.clone()
    y[:, -1] = (y[:, -1] + 1) % VOCAB
    ours = _max_change(model(y).logits[:, :-1], model(x).logits[:, :-1])
    monkeypatch.setattr(SpectralGate, "forward", _seed_gate_forward)
    seed = _max_change(model(y).logits[:, :-1], model(x).logits[:, :-1])
    assert ours < 1e-5 and seed > 1e-3, (ours, seed)


@torch.no_grad()
def test_cache_exact_after_long_chunked_prefill():
    """4096 tokens (128 × max_seq_len) prefilled in chunks of 1000, then 6 decoded tokens, equal
    one full pass: the 1/sqrt(t+1) scale uses absolute positions."""
    model = randomise(tiny_hsn(depth=2))
    T = 4096
    x = ids(1, T + 6, seed=9)
    full = model(x, use_cache=False).logits[:, T:]
    cache = None
    for start in range(0, T, 1000):
        cache = cache_of(model(x[:, start:min(start + 1000, T)], past_key_values=cache))
    steps = []
    for t in range(T, T + 6):
        out = model(x[:, t:t + 1], past_key_values=cache)
        cache = cache_of(out)
        steps.append(out.logits)
    assert_close(torch.cat(steps, 1), full, 1e-4, "decode after 4k context")


@torch.no_grad()
def test_seed_class_generates_and_returns_logits():
    torch.manual_seed(0)
    net = randomise(HoloSpectralNet(VOCAB, dim=32, depth=2, max_seq_len=N, rank=8)).eval()
    prompt = ids(1, 5, seed=3)
    logits = net(prompt)
    assert isinstance(logits, torch.Tensor) and logits.shape == (1, 5, VOCAB)
    out = net.generate(prompt, max_new_tokens=6, do_sample=False, pad_token_id=0)
    seq = prompt
    for _ in range(6):
        seq = torch.cat([seq, net(seq)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, seq)
    full = net(prompt, labels=prompt, return_dict=True)
    assert torch.equal(full.logits, logits) and full.loss is not None
    with pytest.raises(ValueError, match="return_dict=True"):
        net(prompt, labels=prompt)


def test_state_size_is_bounded_and_matches_the_cache(model):
    assert model.state_bytes(1, 1_000) == model.state_bytes(1, 10**6)
    d, L = model.config.hidden_size, model.config.num_hidden_layers
    assert model.state_bytes(2, 100) == 2 * L * (d + (N - 1) * d) * 4  # hologram + gate buffer
    assert model.state_bytes(2, 5) == 2 * L * (d + 5 * d) * 4  # the buffer holds what it saw
    with torch.no_grad():
        for T in (5, 70):
            cache = cache_of(model(ids(2, T), use_cache=True))
            assert cache.nbytes() == model.state_bytes(2, T)
            assert all(set(s) == {"hologram", "buffer"} for s in cache.states)


@torch.no_grad()
def test_seed_class_saves_and_loads(tmp_path):
    net = randomise(hsn_tiny(vocab_size=VOCAB, max_seq_len=N)).eval()
    net.save_pretrained(tmp_path)
    loaded = HoloSpectralNet.from_pretrained(tmp_path).eval()
    x = ids(1, 40, seed=5)
    assert type(loaded) is HoloSpectralNet and torch.equal(loaded(x), net(x))


def test_tied_and_untied_heads_and_parameter_counts():
    tied = tiny_hsn()
    assert tied.lm_head.weight.data_ptr() == tied.model.embed_tokens.weight.data_ptr()
    untied = tiny_hsn(tie_weights=False)
    assert untied.lm_head.weight.data_ptr() != untied.model.embed_tokens.weight.data_ptr()
    d, L, r, V = 32, 3, 8, VOCAB
    blocks = L * (9 * d + 2 * d * r + N // 2 + 1)
    for m, heads in ((tied, 0), (untied, 1)):
        unique = {p.data_ptr(): p.numel() for p in m.parameters()}
        assert m.count_parameters() == sum(unique.values())
        assert m.count_parameters() == (1 + heads) * V * d + blocks + 2 * d
    frozen = tiny_hsn()
    frozen.model.embed_tokens.weight.requires_grad_(False)
    assert frozen.count_parameters() == tied.count_parameters() - V * d


@pytest.mark.parametrize("preset,dim,depth,rank", [(hsn_tiny, 128, 4, 16),
                                                   (hsn_small, 256, 6, 32),
                                                   (hsn_base, 512, 8, 64)])
def test_presets_and_true_parameter_counts(preset, dim, depth, rank):
    """The seed's table claims ~400K / ~1.5M / ~8M at vocab 32000; the embeddings alone are
    32000·dim = 4.1M / 8.2M / 16.4M."""
    net = preset(vocab_size=1000)
    c = net.config
    assert (c.hidden_size, c.num_hidden_layers, c.rank, c.max_seq_len) == (dim, depth, rank, 512)
    assert (c.dim, c.depth, c.tie_weights) == (dim, depth, True)
    body = depth * (9 * dim + 2 * dim * rank + 257) + 2 * dim
    assert net.count_parameters() == 1000 * dim + body
    assert preset(vocab_size=1000, max_seq_len=64).config.max_seq_len == 64


def test_init_is_as_documented():
    """HF init (normal 0.02 Linear / Embedding, unit LayerNorms), then the layers' own: keys
    N(0, 1/d), gate logits 0, channel-mix scale 0.1."""
    torch.manual_seed(0)
    model = tiny_hsn(dim=256, depth=1, rank=64)
    block = model.model.layers[0]
    assert abs(block.mixer.bind_key.std().item() * 16 - 1) < 0.2
    assert abs(block.mixer.unbind_key.std().item() * 16 - 1) < 0.2
    assert torch.equal(block.gate.gate, torch.zeros(N // 2 + 1))
    assert torch.equal(block.channel_mix.scale, torch.full((256,), 0.1))
    for w in (block.channel_mix.down.weight, block.channel_mix.up.weight,
              model.model.embed_tokens.weight):
        assert abs(w.std().item() / 0.02 - 1) < 0.1
    assert torch.equal(block.mixer_norm.weight, torch.ones(256))


def test_seed_quick_start_verbatim():
    from hololm import hsn_small  # the seed: from holospectral import hsn_small

    # Create model
    vocab_size = 32000
    model = hsn_small(vocab_size=vocab_size)

    # Count parameters
    num_params = model.count_parameters()
    print(f"Parameters: {num_params:,}")  # ~1.5M for small

    # Forward pass
    batch_size, seq_len = 2, 128
    input_ids = torch.randint(0, vocab_size, (batch_size, seq_len))
    logits = model(input_ids)  # Shape: (batch_size, seq_len, vocab_size)

    assert logits.shape == (batch_size, seq_len, vocab_size)
    d, depth, rank, n = 256, 6, 32, 512  # not ~1.5M: the embedding alone is 32000·256
    assert num_params == vocab_size * d + depth * (9 * d + 2 * d * rank + n // 2 + 1) + 2 * d


def test_seed_training_example_verbatim():
    from hololm import hsn_small  # the seed: from holospectral import hsn_small

    # Initialize
    model = hsn_small(vocab_size=32000)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)

    # Training step
    input_ids = torch.randint(0, 32000, (4, 128))
    target_ids = torch.randint(0, 32000, (4, 128))

    logits = model(input_ids)
    loss = F.cross_entropy(logits.view(-1, 32000), target_ids.view(-1))
    loss.backward()
    optimizer.step()

    assert torch.isfinite(loss) and abs(loss.item() - math.log(32000)) < 0.5
    assert all(p.grad is not None for p in model.parameters())


def test_config_spellings_and_errors():
    a = HoloSpectralConfig(dim=64, depth=3, tie_weights=False, max_seq_len=99, rank=4)
    b = HoloSpectralConfig(hidden_size=64, num_hidden_layers=3, tie_word_embeddings=False,
                           max_seq_len=99, rank=4)
    assert a.to_dict() == b.to_dict() and a.dim == 64 and a.depth == 3 and not a.tie_weights
    assert type(AutoConfig.for_model("hsn")) is HoloSpectralConfig
    with pytest.raises(ValueError, match="disagree"):
        HoloSpectralConfig(dim=64, hidden_size=32)
    with pytest.raises(ValueError, match="even"):
        HoloSpectralConfig(dim=33)
    with pytest.raises(ValueError, match="rank must be a positive int"):
        HoloSpectralConfig(rank=0)
    with pytest.raises(ValueError, match="max_seq_len"):
        HoloSpectralConfig(max_seq_len=2.5)
    with pytest.raises(ValueError, match="decay"):
        HoloSpectralConfig(decay=1.5)
