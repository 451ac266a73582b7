"""Phasor capacity study: measured recall against the element-wise binding theory, the derived
position-code similarities, and the benchmark's outputs."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from hololm.bench.capacity import (
    FREQ_TYPES,
    frequencies,
    main,
    measured_capacity,
    orthogonality_measures,
    recall_point,
    rope_similarity_limit,
    similarity,
    theory_accuracy,
    theory_capacity,
)


@pytest.mark.parametrize("key_type", ["uniform", "random_fourier", "multiscale", "rope",
                                      "content_g1", "content_g8"])
def test_one_stored_item_is_read_back_exactly(key_type):
    got = recall_point(key_type, 64, 1, codebook_size=256, decisions=32)
    assert got["accuracy"] == 1.0
    assert got["cosine"] > 1 - 1e-5  # also checks the position read: a phase error lowers it


@pytest.mark.parametrize(("key_type", "n_items"), [("uniform", 32), ("uniform", 64),
                                                   ("random_fourier", 48)])
def test_measured_recall_follows_the_theory(key_type, n_items):
    got = recall_point(key_type, 256, n_items, codebook_size=1024, decisions=1024, seed=3)
    expected = theory_accuracy(n_items, 256, 1024)
    assert 0.2 < expected < 0.9  # a point on the slope, where a wrong theory shows
    assert abs(got["accuracy"] - expected) < 0.06


@pytest.mark.parametrize(("copies", "n_items"), [(2, 100), (4, 200)])
def test_copies_follow_the_theory_of_a_divided_crosstalk(copies, n_items):
    """C permuted copies read as their mean: recall at N as a single memory at N / C."""
    got = recall_point("uniform", 256, n_items, codebook_size=1024, decisions=1024, seed=5,
                       copies=copies)
    single = recall_point("uniform", 256, n_items, codebook_size=1024, decisions=1024, seed=5)
    expected = theory_accuracy(n_items, 256, 1024, crosstalk=0.5 / copies)
    assert 0.2 < expected < 0.9 and single["accuracy"] < expected - 0.3
    assert abs(got["accuracy"] - expected) < 0.06


@pytest.mark.parametrize("hd_dim", [64, 512])
def test_per_item_fidelity_does_not_depend_on_hd_dim(hd_dim):
    n = 17
    got = recall_point("uniform", hd_dim, n, decisions=256, seed=1)
    assert got["crosstalk"] == pytest.approx(0.5, rel=0.1)  # E[cos²Δθ] for uniform phases
    assert got["cosine"] == pytest.approx(1 / math.sqrt(1 + (n - 1) / 2), rel=0.05)
    assert got["snr"] == pytest.approx(2 / (n - 1), rel=0.1)


def test_rope_keys_blur_into_their_neighbours():
    rope = recall_point("rope", 256, 32, decisions=512)
    fourier = recall_point("random_fourier", 256, 32, decisions=512)
    assert rope["accuracy"] < theory_accuracy(32, 256, 1024) - 0.3 < fourier["accuracy"]
    assert rope["neighbour_error_share"] > 0.5  # errors decode the value stored next door
    assert fourier["neighbour_error_share"] < 0.2


def test_theory_integral_matches_a_simulation_of_its_gaussian_model():
    gen = torch.Generator().manual_seed(0)
    d, n, m, draws = 128, 20, 256, 20000
    noise = (n - 1) / 2
    true = d + math.sqrt(d * noise) * torch.randn(draws, generator=gen, dtype=torch.float64)
    wrong = math.sqrt(d * (1 + noise)) * torch.randn(draws, m - 1, generator=gen,
                                                     dtype=torch.float64)
    simulated = float((true > wrong.max(-1).values).double().mean())
    assert theory_accuracy(n, d, m) == pytest.approx(simulated, abs=0.015)


def test_theory_capacity_inverts_the_accuracy_and_grows_with_hd_dim():
    caps = [theory_capacity(d, 1024, 0.5) for d in (256, 1024, 4096)]
    for d, cap in zip((256, 1024, 4096), caps, strict=True):
        assert theory_accuracy(cap, d, 1024) == pytest.approx(0.5, abs=1e-3)
    assert caps[0] < caps[1] < caps[2]
    assert 3 < caps[1] / caps[0] < 5 and 3 < caps[2] / caps[1] < 5  # ~linear in hd_dim


def test_measured_capacity_interpolates_the_crossing():
    assert measured_capacity([1, 2, 4], [1.0, 0.9, 0.7], 0.8) == pytest.approx(2 * math.sqrt(2))
    assert math.isnan(measured_capacity([1, 2], [1.0, 0.95], 0.5))


@pytest.mark.parametrize("hd_dim", [256, 1024])
def test_random_fourier_similarity_is_one_over_sqrt_d(hd_dim):
    z = similarity(frequencies("random_fourier", hd_dim), torch.arange(1, 513))
    assert float(z.abs().pow(2).mean()) == pytest.approx(1 / hd_dim, rel=0.15)


@pytest.mark.parametrize("hd_dim", [512, 2048])
def test_rope_similarity_follows_its_continuum_limit(hd_dim):
    deltas = [1, 2, 4, 8]
    z = similarity(frequencies("rope", hd_dim), torch.tensor(deltas)).abs()
    for measured, limit in zip(z.tolist(), rope_similarity_limit(deltas), strict=True):
        assert abs(measured - limit) < 1.5 / hd_dim + 1e-4  # Euler–Maclaurin: ≤ 1/D


def test_multiscale_similarity_is_the_mean_sinc_over_heads():
    hd_dim, heads = 4096, 8
    for delta in (1, 3, 16):
        z = similarity(frequencies("multiscale", hd_dim, n_heads=heads), torch.tensor([delta]))
        expected = torch.sinc(delta / 2.0 ** torch.arange(heads, dtype=torch.float64)).mean()
        assert abs(float(z.real) - float(expected)) < 4 / math.sqrt(hd_dim)


def test_orthogonality_ratios_rope_fixed_random_grows_with_sqrt_d():
    small = {k: orthogonality_measures(frequencies(k, 64), (8, 64)) for k in FREQ_TYPES}
    big = {k: orthogonality_measures(frequencies(k, 4096), (8, 64)) for k in FREQ_TYPES}
    assert small["rope"]["ratio_mean_8"] == pytest.approx(big["rope"]["ratio_mean_8"], abs=0.02)
    limit = 1 / (sum(rope_similarity_limit(list(range(1, 9)))) / 8)
    assert big["rope"]["ratio_mean_8"] == pytest.approx(limit, abs=0.01)
    for m in (small, big):
        z1 = complex(similarity(frequencies("rope", 64 if m is small else 4096),
                                torch.tensor([1]))[0])
        assert m["rope"]["dist_500_501"] == pytest.approx(math.sqrt(2 * (1 - z1.real)))
    for d, m in ((64, small), (4096, big)):
        assert m["random_fourier"]["ratio_mean_8"] > 5
        assert m["random_fourier"]["ratio_mean_64"] == pytest.approx(
            2 * math.sqrt(d / math.pi), rel=0.25)  # 1 / E|s|, |s| Rayleigh


def test_main_writes_tables_and_plots(tmp_path, capsys):
    rc = main(["--output_dir", str(tmp_path), "--hd_dims", "32", "--ortho_dims", "32",
               "--key_types", "uniform,rope", "--decisions", "64", "--max_delta", "64",
               "--steps_per_octave", "1", "--codebook_size", "64", "--copies", "1,2"])
    assert rc == 0
    for name in ("capacity.csv", "orthogonality.csv", "capacity.png", "orthogonality.png",
                 "capacity.md", "copies.csv"):
        assert (tmp_path / name).stat().st_size > 0
    with (tmp_path / "capacity.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["key_type"] for r in rows} == {"uniform", "rope"}
    assert float(next(r for r in rows if r["n_items"] == "1")["accuracy"]) == 1.0
    with (tmp_path / "orthogonality.csv").open() as f:
        assert sum(1 for _ in csv.DictReader(f)) == len(FREQ_TYPES) * 64
    out = capsys.readouterr().out
    assert "| uniform | 32 | 64 |" in out and "| rope | 32 |" in out
    assert (tmp_path / "capacity.md").read_text().strip() in out
