"""The registry is the one list of names: every command takes its names, every family builds
through `build_model`, and its layer kind builds through the backbone's one factory."""

import pytest
import torch

from hololm.bench import recall_models, speed
from hololm.models import backbone, configs
from hololm.models.presets import build_config, build_model
from hololm.models.registry import BASELINES, FAMILIES, NAMES, VARIANTS, family_of
from hololm.train.config import TrainConfig


def test_every_command_takes_the_registry_names():
    train_ok = {name for name in NAMES if _train_accepts(name)}
    speed_ok = {name for name in NAMES if _speed_accepts("--models", name)}
    speed_train_ok = {name for name in NAMES if _speed_accepts("--train_models", name)}
    assert train_ok == speed_ok == speed_train_ok == set(NAMES)
    # the recall bench reuses a model's blocks for vector tasks: hololm's names, and Mamba-2 as
    # the outside reference (token tasks only)
    assert set(recall_models.KNOWN) == set(NAMES) - set(BASELINES) | {"mamba2"}
    assert set(speed.MIXERS) == set(FAMILIES) == set(configs.LAYER_KINDS)
    assert not _train_accepts("phasor") and not _speed_accepts("--models", "matrix")


def _train_accepts(name: str) -> bool:
    try:
        TrainConfig(model_type=name)
    except ValueError:
        return False
    return True


def _speed_accepts(flag: str, name: str) -> bool:
    try:
        speed.parse_args(["--output_dir", "x", flag, name])
    except SystemExit:
        return False
    return True


@pytest.mark.parametrize("name", [*FAMILIES, *VARIANTS])
def test_every_name_builds_its_family_with_its_layer(name):
    family, variant = family_of(name)
    with torch.device("meta"):
        model = build_model(name, "tiny", 64, 32, hidden_size=64, num_hidden_layers=4)
    assert type(model) is family.model and type(model.config) is family.config
    kinds = model.config.mixer_types
    assert set(kinds) == ({family.name, "attention"} if variant and variant.attention_every
                          else {family.name})
    layer = next(layer for layer, kind in zip(model.model.layers, kinds, strict=True)
                 if kind == family.name)
    assert isinstance(layer if family.name == "hsn" else layer.mixer, family.layer)
    config = build_config(name, "tiny", 64, 32, hidden_size=64, num_hidden_layers=4)
    assert isinstance(backbone.build_mixer(family.name, config), family.layer)


def test_hybrid_variants_put_attention_where_the_original_does():
    def kinds(name, n):
        return build_config(name, "tiny", 64, 32, num_hidden_layers=n).mixer_types
    assert kinds("holo-hybrid", 16) == (["holo"] * 7 + ["attention"]) * 2
    assert kinds("long-hybrid", 8) == (["long"] * 3 + ["attention"]) * 2
    assert kinds("holo-hybrid", 2) == ["holo", "attention"]  # at least the last layer
    assert kinds("holo", 16) == ["holo"] * 16 and kinds("long", 8) == ["long"] * 8
    assert build_config("holo-noconv", "tiny", 64, 32).key_conv_size == 1


def test_hsn_blocks_mix_with_attention():
    config = configs.HoloSpectralConfig(vocab_size=64, dim=32, depth=2, max_seq_len=8, rank=4,
                                        num_attention_heads=2, mixer_types=["hsn", "attention"])
    model = FAMILIES["hsn"].model(config).eval()
    x = torch.randint(64, (1, 12))
    with torch.no_grad():
        assert model(x).logits.shape == (1, 12, 64)
    assert model.state_bytes(1, 100) > model.state_bytes(1, 10)  # the KV cache grows
