"""nn.Modules over the ops: the token mixers (one file each), attention, short conv, rotary
embeddings, MLPs. The original projects import their layers from one place (`from
hololm.layers import PhasorAttention`), so every public layer is re-exported here. Layers build
on `hololm.ops` only, never on `hololm.models` (the models import the layers)."""

from hololm.layers.attention import CausalSelfAttention
from hololm.layers.base import Mixer, State, set_backend
from hololm.layers.long import LongAttentionV5
from hololm.layers.matrix import MatrixMemory
from hololm.layers.mlp import MLPS, GatedMLP, GeluMLP
from hololm.layers.phasor import PhasorAttention
from hololm.layers.rotary import RotaryEmbedding
from hololm.layers.short_conv import ShortConv
from hololm.layers.spectral import HolographicMixer, HoloSpectralBlock, LiteChannelMix, SpectralGate

__all__ = [
    "MLPS",
    "CausalSelfAttention",
    "GatedMLP",
    "GeluMLP",
    "HoloSpectralBlock",
    "HolographicMixer",
    "LiteChannelMix",
    "LongAttentionV5",
    "MatrixMemory",
    "Mixer",
    "PhasorAttention",
    "RotaryEmbedding",
    "ShortConv",
    "SpectralGate",
    "State",
    "set_backend",
]
