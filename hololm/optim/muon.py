"""Muon: momentum, then orthogonalise the update of each 2-D weight matrix.

For a weight W ∈ ℝ^{r×c} with gradient G, momentum μ, learning rate η and weight decay λ:

    M ← μ M + G                                   momentum buffer
    U = G + μ M   (Nesterov)   or   U = M
    O = NS₅(U) ≈ U (UᵀU)^{-1/2}                   the nearest semi-orthogonal matrix
    W ← (1 − ηλ) W − η · √max(1, r/c) · O         decoupled decay, shape-aware step

`newton_schulz` runs the quintic iteration X ← a X + (b A + c A²) X with A = X Xᵀ and
(a, b, c) = (3.4445, −4.7750, 2.0315) from X₀ = U / (‖U‖_F + ε). It acts on each singular value
s of X₀ as the scalar polynomial p(s) = a s + b s³ + c s⁵ and keeps the singular vectors. The
coefficients trade exactness for speed: after five steps every s ≥ 3·10⁻³ lands in about
[0.68, 1.20] rather than at 1, which is all Muon needs; those below ~10⁻³ (the tail of a square
random matrix) stay below 0.5. A tall X is transposed first, so that A is the small Gram matrix.

Precision: bfloat16 on CUDA, where tensor cores make the five matmuls cheap and the iteration is
insensitive to rounding (it has no exact target); float32 elsewhere, since most CPUs run bfloat16
matmuls no faster (or emulated), and float32 keeps CPU checks tight.

Scaling: an r×c semi-orthogonal matrix has RMS entry 1/√max(r, c). Multiplying by √max(1, r/c)
makes it 1/√c = 1/√fan_in for nn.Linear weights (r = fan_out): for a unit-RMS input a step moves
the layer's outputs by RMS ≈ η whatever its width or expansion; lr = 0.02 is the usual setting
for this scaling. Weights stored as (fan_in, fan_out) — transformers' Conv1D in GPT-2 —
get the transposed rule, a factor of at most √(expansion) on their tall matrices.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz(G: torch.Tensor, steps: int = 5, eps: float = 1e-7,
                  dtype: torch.dtype | None = None) -> torch.Tensor:
    """The approximate orthogonalisation NS_steps(G) of a matrix (or a batch, `(..., r, c)`),
    in G's dtype. `dtype` is the working precision: by default bfloat16 on CUDA, float32
    elsewhere."""
    if G.ndim < 2:
        raise ValueError(f"newton_schulz needs a matrix, got shape {tuple(G.shape)}")
    if dtype is None:
        dtype = torch.bfloat16 if G.is_cuda else torch.float32
    a, b, c = NS_COEFFICIENTS
    X = G.to(dtype)
    tall = X.shape[-2] > X.shape[-1]
    if tall:
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + eps)
    for _ in range(steps):
        A = X @ X.mT
        X = a * X + (b * A + c * A @ A) @ X
    return (X.mT if tall else X).to(G.dtype)


def muon_update(grad: torch.Tensor, buf: torch.Tensor, momentum: float, nesterov: bool,
                ns_steps: int) -> torch.Tensor:
    """Advance the momentum buffer in place and return the scaled orthogonalised direction."""
    buf.mul_(momentum).add_(grad)
    direction = grad.add(buf, alpha=momentum) if nesterov else buf
    rows, cols = grad.shape
    return newton_schulz(direction, ns_steps) * max(1.0, rows / cols) ** 0.5


def check_lr_and_decay(group: dict[str, Any]) -> None:
    """Raise ValueError for a negative learning rate or weight decay."""
    if group["lr"] < 0:
        raise ValueError(f"invalid learning rate {group['lr']}")
    if group["weight_decay"] < 0:
        raise ValueError(f"invalid weight_decay {group['weight_decay']}")


def check_muon_group(group: dict[str, Any]) -> None:
    """A Muon group's hyperparameters are valid and every parameter is a 2-D matrix."""
    check_lr_and_decay(group)
    if not 0 <= group["momentum"] < 1:
        raise ValueError(f"invalid momentum {group['momentum']}; need 0 <= momentum < 1")
    if int(group["ns_steps"]) != group["ns_steps"] or group["ns_steps"] < 1:
        raise ValueError(f"invalid ns_steps {group['ns_steps']}; need a positive integer")
    for p in group["params"]:
        if p.ndim != 2:
            raise ValueError(f"Muon updates 2-D weight matrices only; got a parameter of shape "
                             f"{tuple(p.shape)} (give it to AdamW, e.g. via split_muon_adamw)")


def as_param_list(params: torch.Tensor | Iterable[torch.Tensor]) -> list[torch.Tensor]:
    return [params] if isinstance(params, torch.Tensor) else list(params)


@torch.no_grad()
def muon_step(group: dict[str, Any], state: dict[torch.Tensor, dict[str, Any]]) -> None:
    """One Muon step on every parameter of `group` that has a gradient."""
    lr, weight_decay = group["lr"], group["weight_decay"]
    for p in group["params"]:
        if p.grad is None:
            continue
        p_state = state[p]
        if "momentum_buffer" not in p_state:
            p_state["momentum_buffer"] = torch.zeros_like(p)
        update = muon_update(p.grad, p_state["momentum_buffer"], group["momentum"],
                             group["nesterov"], group["ns_steps"])
        p.mul_(1 - lr * weight_decay)
        p.add_(update, alpha=-lr)


class Muon(Optimizer):
    """Muon for 2-D weight matrices (see the module docstring); other shapes raise ValueError.
    Pair it with AdamW for embeddings, head, norms and vectors: `hololm.optim.build_optimizer`."""

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
                 lr: float = 0.02, momentum: float = 0.95, nesterov: bool = True,
                 ns_steps: int = 5, weight_decay: float = 0.0) -> None:
        defaults = {"lr": lr, "momentum": momentum, "nesterov": nesterov, "ns_steps": ns_steps,
                    "weight_decay": weight_decay}
        check_muon_group({**defaults, "params": []})
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        param_group = {**param_group, "params": as_param_list(param_group["params"])}
        check_muon_group({**self.defaults, **param_group})
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            muon_step(group, self.state)
        return loss
