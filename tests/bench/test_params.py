import torch

from hololm.bench.params import cache_bytes, main, parameter_table
from hololm.models.presets import build_model


def test_meta_counts_equal_real_counts_and_cache_sizes():
    table = parameter_table(vocab_size=300, seq_len=64, contexts=(10, 100))
    for model_type in ("holo", "long", "hologpt", "hsn", "gpt2", "llama", "mamba2"):
        model = build_model(model_type, "tiny", 300, 64)
        total = sum(p.numel() for p in model.parameters())
        assert f"| {model_type} | tiny | {total / 1e6:,.2f}M |" in table
        # past the longest fixed window (hsn's gate buffer of seq_len − 1 inputs)
        grows = cache_bytes(model, 1000) > cache_bytes(model, 100)
        assert grows == (model_type in ("gpt2", "llama"))  # a family name: pure memory


def test_mamba2_cache_formula_matches_its_real_cache():
    model = build_model("mamba2", "tiny", 300, 64).eval()
    with torch.no_grad():
        cache = model(torch.randint(0, 300, (1, 20)), use_cache=True).cache_params
    real = sum(t.numel() * t.element_size() for layer in cache.layers
               for states in (layer.conv_states, layer.recurrent_states)
               for t in states.values() if t is not None)
    assert real == cache_bytes(model, 20)


def test_cli(capsys):
    main(["--vocab_size", "1000", "--seq_len", "128"])
    assert "| mamba2 | medium |" in capsys.readouterr().out


def test_hsn_table_counts_match_real_models(capsys):
    from hololm import hsn_tiny

    main(["--hsn"])
    out = capsys.readouterr().out
    assert f"| hsn_tiny | ~400K | {hsn_tiny(32000).count_parameters():,} |" in out
    assert f"{hsn_tiny(1000).count_parameters():,}" in out
