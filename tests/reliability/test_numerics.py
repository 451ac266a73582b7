"""Numerics over long runs, for a tiny model of every family (holo, long, hologpt, hsn).

- 65 536-token prefill (in chunks through the cache), then 256 tokens decoded one at a time,
  equal one full forward pass. (The hybrids, attention layer included, run the same check in
  tests/models/test_causal_lm.py::test_cache_exact_at_65k_context.)
- Streaming ~100k tokens (1M under `-m slow`) through the cache stays finite, and at
  checkpoints along the way equals a recomputation with other chunk boundaries and token-by-token
  decoding from a copy of the cache.
- bf16 autocast forward + backward at T = 8192 with strong gates: no inf/NaN in any module's
  output (gates, phases, memories: forward hooks), finite gradients, logits close to fp32.

A naive implementation fails these: float32 (or bf16) position phases p·ω drift by radians at
p ~ 10^5–10^6, a chunked scan that exponentiates Γ_t and −Γ_s separately overflows with strong
gates, an off-by-one in the position carried across chunks shows as a mismatch between
chunkings, and an unscaled bundle grows without bound.
"""

from __future__ import annotations

import math

import pytest
import torch

from hololm.models import HoloSpectralConfig, HoloSpectralForCausalLM
from hololm.models.cache import cache_of
from tests.helpers import assert_close
from tests.models.conftest import tiny_model
from tests.models.helpers import VOCAB, ids, prefill_then_decode

FAMILIES = ("holo", "long", "hologpt", "hsn")
# strong gates: decays down to 0.01 and forget gates sigma(-4) per token, far beyond init
STRONG = {"long": {"decay_min": 0.01}, "hologpt": {"forget_bias": -4.0}}


pytestmark = pytest.mark.usefixtures("one_thread")


def build(family: str, hybrid: bool = False, strong: bool = False) -> torch.nn.Module:
    """One or two layers, d = 32, `strong` gates (see STRONG) or the default ones; hsn: gate
    filter of 256 taps, bundle without decay (the hardest case: a plain running sum over the
    whole stream)."""
    torch.manual_seed(0)
    if family == "hsn":
        config = HoloSpectralConfig(vocab_size=VOCAB, dim=32, depth=2, max_seq_len=256, rank=8)
        model = HoloSpectralForCausalLM(config).eval()
        with torch.no_grad():  # trained-like gates of both signs, not the identity at init
            for layer in model.model.layers:
                layer.gate.gate.copy_(2 * torch.randn_like(layer.gate.gate))
        return model
    return tiny_model(family, hybrid, num_hidden_layers=2 if hybrid else 1,
                      max_position_embeddings=2**21, **(STRONG.get(family, {}) if strong else {}))


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_65k_prefill_then_decode_equals_the_full_pass(family):
    model = build(family)
    T, decode = 65_536, 256
    x = ids(1, T + decode, seed=1)
    full = model(x, use_cache=False).logits[:, T:]
    assert_close(prefill_then_decode(model, x, T, 16_384), full, 1e-4,
                  f"{family}: decode after a 65k prefill")


def stream(model, x: torch.Tensor, chunk: int, keep: set[int], forks: set[int]
           ) -> tuple[dict[int, torch.Tensor], dict[int, object]]:
    """Feed x through the cache `chunk` tokens at a time; return the logits at positions
    `keep` and copies of the cache at the chunk boundaries in `forks`. Every logit and the
    final states must be finite."""
    kept, copies, cache = {}, {}, None
    for start in range(0, x.shape[1], chunk):
        out = model(x[:, start:start + chunk], past_key_values=cache, use_cache=True)
        cache = cache_of(out)
        assert torch.isfinite(out.logits).all(), f"non-finite logits in [{start}, +{chunk})"
        for p in keep:
            if start <= p < start + chunk:
                kept[p] = out.logits[0, p - start]
        end = min(start + chunk, x.shape[1])
        if end in forks:
            copies[end] = cache.copy()
    for state in cache.states:
        assert all(torch.isfinite(t).all() for t in state.values()), "non-finite state"
    return kept, copies


def check_long_stream(family: str, T: int, n_checkpoints: int, decode: int = 16) -> None:
    """Stream A (chunks of 4096) vs stream B (chunks of 3001, off the ops' 64-token blocks) at
    n checkpoints; from a copy of A's cache at each checkpoint, `decode` tokens one at a time
    equal B's logits there."""
    model = build(family)
    x = ids(1, T, seed=2)
    marks = [round(T * (i + 1) / n_checkpoints) // 4096 * 4096 for i in range(n_checkpoints)]
    marks = sorted({m for m in marks if 0 < m <= T - decode})
    keep = {p for m in marks for p in range(m - 4, m + decode)}
    with torch.no_grad():
        a, forks = stream(model, x, 4096, keep, set(marks))
        b, _ = stream(model, x, 3001, keep, set())
        for m in marks:
            window = range(m - 4, m + decode)
            assert_close(torch.stack([a[p] for p in window]), torch.stack([b[p] for p in window]),
                          1e-4, f"{family}: chunkings disagree at {m}")
            cache, steps = forks[m], []
            for t in range(m, m + decode):
                out = model(x[:, t:t + 1], past_key_values=cache, use_cache=True)
                cache = cache_of(out)
                steps.append(out.logits[0, 0])
            assert_close(torch.stack(steps), torch.stack([b[p] for p in range(m, m + decode)]),
                          1e-4, f"{family}: token-by-token decode at {m}")


@pytest.mark.parametrize("family", FAMILIES)
def test_100k_stream_is_finite_and_matches_other_chunkings(family):
    check_long_stream(family, T=100_000, n_checkpoints=4)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_1m_stream_is_finite_and_matches_other_chunkings(family):
    check_long_stream(family, T=2**20, n_checkpoints=8)


def _non_finite_outputs(model: torch.nn.Module) -> tuple[list[str], list]:
    """Forward hooks on every module that record the names of those whose output (a tensor,
    or tensors in a tuple / dict, e.g. a mixer's state) holds an inf or a NaN."""
    bad: list[str] = []

    def tensors(value):
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, tuple | list):
            for v in value:
                yield from tensors(v)
        elif isinstance(value, dict):
            for v in value.values():
                yield from tensors(v)

    def hook(name):
        def check(module, args, output):
            if any(t.is_floating_point() or t.is_complex() for t in tensors(output)) and not all(
                    torch.isfinite(t).all() for t in tensors(output)
                    if t.is_floating_point() or t.is_complex()):
                bad.append(name)
        return check

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    return bad, handles


@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_autocast_training_at_8192_has_no_overflow(family):
    model = build(family, hybrid=family != "hsn", strong=True).train()
    x = ids(1, 8192, seed=3)
    with torch.no_grad():
        reference = model(x).logits.float()
    bad, handles = _non_finite_outputs(model)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x, labels=x)
        out.loss.backward()
    finally:
        for handle in handles:
            handle.remove()
    assert not bad, f"inf/NaN in the outputs of {sorted(set(bad))}"
    assert math.isfinite(out.loss.item())
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads and all(torch.isfinite(g).all() for g in grads.values())
    # bf16 keeps ~3 significant digits: more error than that means a phase or a decay went wrong
    assert_close(out.logits.float(), reference, 0.05, f"{family}: bf16 vs fp32 logits")
