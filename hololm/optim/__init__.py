"""Optimizers: Muon for hidden weight matrices, AdamW for the rest (HoloSpectralNet's split)."""

from hololm.optim.muon import Muon, newton_schulz
from hololm.optim.param_groups import MuonWithAdamW, build_optimizer, split_muon_adamw

__all__ = ["Muon", "MuonWithAdamW", "build_optimizer", "newton_schulz", "split_muon_adamw"]
