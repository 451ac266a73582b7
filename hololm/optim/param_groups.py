"""Which parameters Muon updates, and one optimizer that runs Muon and AdamW side by side.

Split rule (`split_muon_adamw`), applied to each trainable parameter once (tied tensors count
once):

    Muon   ⟺  it is the `weight` of an nn.Linear or of transformers' Conv1D (GPT-2's transposed
              Linear), is not the input embedding or the output head, and is not a bank of a few
              vectors: max(r, c) ≤ 8 · min(r, c).
    AdamW  ⟸  everything else: input embeddings (`get_input_embeddings()`, and every
              nn.Embedding, e.g. GPT-2's position table), the head (`get_output_embeddings()`,
              or a module named `lm_head`/`head` when the model has no such method — tied to the
              embedding or not), norms, all 1-D parameters (biases, gains, A_log, D, dt_bias,
              scales), convolution kernels (ShortConv's and Mamba-2's depthwise Conv1d), any
              other shape, and any 2-D parameter that is not a Linear/Conv1D weight.

Names never decide: "gate" matrices are treated by shape. Llama's `gate_proj`, hololm's
`gate_up` (SwiGLU) and LongAttention's `gate_proj` (3d×d) are full-width hidden matrices and go
to Muon; a bank of per-head scalar gates W ∈ ℝ^{kH×d} (HoloGPT's forget/write `gate_proj`,
2H×d, aspect matrix_dim/2 = 32) goes to AdamW, since orthogonalising it would force every
head's gate row to the same step size. The aspect bound 8 (inclusive) keeps every hidden
projection in use (qkv 3, MLP 4, SwiGLU ≈ 5.3, Mamba-2's in_proj ≈ 4.5, the fused gated-GELU
`gate_up` at expansion 4 and HoloSpectralNet's LiteChannelMix (rank = dim/8) both exactly 8) and
leaves such gate banks out.

`MuonWithAdamW` is a single torch.optim.Optimizer whose groups are marked `use_muon`: a
scheduler such as LambdaLR sees every group in `param_groups`, and `state_dict` /
`load_state_dict` are torch's own, so checkpoint-and-resume is exact without a wrapper keeping
two optimizers in step. AdamW groups follow torch.optim.AdamW:

    m ← β₁ m + (1 − β₁) g,   v ← β₂ v + (1 − β₂) g²,   t ← t + 1
    θ ← (1 − ηλ) θ − η · (m / (1 − β₁ᵗ)) / (√(v / (1 − β₂ᵗ)) + ε)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from torch import nn
from torch.optim import AdamW, Optimizer
from transformers.pytorch_utils import Conv1D

from hololm.optim.muon import as_param_list, check_lr_and_decay, check_muon_group, muon_step

MAX_MUON_ASPECT = 8
HEAD_NAMES = ("lm_head", "head")


def _hf_module(model: nn.Module, getter: str) -> nn.Module | None:
    """`model.get_input_embeddings()` / `get_output_embeddings()`, or None where absent."""
    try:
        return getattr(model, getter)()
    except (AttributeError, NotImplementedError):
        return None


def embedding_and_head(model: nn.Module) -> list[nn.Module]:
    """The input embedding and the output head, by the HF getters or else by name."""
    embedding = _hf_module(model, "get_input_embeddings")
    head = _hf_module(model, "get_output_embeddings")
    found = [m for m in (embedding, head) if m is not None]
    if head is None:
        found += [m for name, m in model.named_modules() if name.rsplit(".", 1)[-1] in HEAD_NAMES]
    return found


def is_hidden_matrix(module: nn.Module, param: torch.Tensor) -> bool:
    """A Linear/Conv1D weight that is a real matrix, not a bank of a few vectors."""
    if not isinstance(module, nn.Linear | Conv1D) or param is not module.weight:
        return False
    small, large = sorted(param.shape)
    return large <= MAX_MUON_ASPECT * small


def split_muon_adamw(model: nn.Module, muon_lr: float = 0.02, adamw_lr: float = 3e-4,
                     weight_decay: float = 0.0, adamw_betas: tuple[float, float] = (0.9, 0.95)
                     ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(Muon group, AdamW group) of the model's trainable parameters by the module's rule, as
    param-group dicts for `MuonWithAdamW`; `weight_decay` applies to both."""
    excluded = {id(p) for m in embedding_and_head(model) for p in m.parameters()}
    seen: set[int] = set()
    muon: list[nn.Parameter] = []
    adamw: list[nn.Parameter] = []
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            use_muon = id(p) not in excluded and is_hidden_matrix(module, p)
            (muon if use_muon else adamw).append(p)
    return ({"params": muon, "use_muon": True, "lr": muon_lr, "weight_decay": weight_decay},
            {"params": adamw, "use_muon": False, "lr": adamw_lr, "betas": adamw_betas,
             "weight_decay": weight_decay})


def check_adamw_group(group: dict[str, Any]) -> None:
    check_lr_and_decay(group)
    if not all(0 <= beta < 1 for beta in group["betas"]):
        raise ValueError(f"invalid betas {group['betas']}; need 0 <= beta < 1")
    if group["eps"] < 0:
        raise ValueError(f"invalid eps {group['eps']}")


@torch.no_grad()
def adamw_step(group: dict[str, Any], state: dict[torch.Tensor, dict[str, Any]]) -> None:
    """One AdamW step (module docstring) on every parameter of `group` that has a gradient."""
    lr, weight_decay, eps = group["lr"], group["weight_decay"], group["eps"]
    beta1, beta2 = group["betas"]
    for p in group["params"]:
        if p.grad is None:
            continue
        p_state = state[p]
        if not p_state:
            p_state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
        p_state["step"] += 1
        t, m, v = p_state["step"], p_state["exp_avg"], p_state["exp_avg_sq"]
        m.lerp_(p.grad, 1 - beta1)
        v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
        denom = (v.sqrt() / (1 - beta2**t) ** 0.5).add_(eps)
        p.mul_(1 - lr * weight_decay)
        p.addcdiv_(m, denom, value=-lr / (1 - beta1**t))


class MuonWithAdamW(Optimizer):
    """Muon on groups with `use_muon=True`, AdamW on groups with `use_muon=False`. Every group
    sets `lr` and `use_muon`; the keyword arguments are defaults for the rest."""

    def __init__(self, param_groups: Iterable[dict[str, Any]], momentum: float = 0.95,
                 nesterov: bool = True, ns_steps: int = 5,
                 betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        defaults = {"momentum": momentum, "nesterov": nesterov, "ns_steps": ns_steps,
                    "betas": betas, "eps": eps, "weight_decay": weight_decay}
        super().__init__(list(param_groups), defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        for key in ("lr", "use_muon"):
            if key not in param_group:
                raise ValueError(f"every MuonWithAdamW group must set {key!r}")
        param_group = {**param_group, "params": as_param_list(param_group["params"])}
        merged = {**self.defaults, **param_group}
        (check_muon_group if param_group["use_muon"] else check_adamw_group)(merged)
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            (muon_step if group["use_muon"] else adamw_step)(group, self.state)
        return loss


def build_optimizer(model: nn.Module, kind: Literal["muon", "adamw"] = "muon",
                    muon_lr: float = 0.02, adamw_lr: float = 3e-4, weight_decay: float = 0.0,
                    adamw_betas: tuple[float, float] = (0.9, 0.95)) -> Optimizer:
    """"muon": `MuonWithAdamW` over `split_muon_adamw(model, ...)`; "adamw": the baseline,
    torch.optim.AdamW with lr `adamw_lr` on every trainable parameter."""
    if kind == "muon":
        return MuonWithAdamW(split_muon_adamw(model, muon_lr, adamw_lr, weight_decay,
                                              adamw_betas))
    if kind == "adamw":
        return AdamW([p for p in model.parameters() if p.requires_grad], lr=adamw_lr,
                     betas=adamw_betas, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer kind {kind!r}; choose 'muon' or 'adamw'")
