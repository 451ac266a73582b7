"""Rotary position embedding (RoFormer), parameter-free. Angles are computed in float64 from
integer positions, so position 131 072 is rotated as precisely as position 1."""

from __future__ import annotations

import torch
from torch import nn


class RotaryEmbedding(nn.Module):
    """Rotates pairs (x[..., j], x[..., j + dim/2]) by angle p·θ_j, θ_j = base^(-2j/dim)."""

    def __init__(self, dim: int, base: float = 10000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"RotaryEmbedding needs an even dim, got {dim}")
        self.dim, self.base = dim, base

    def forward(self, x: torch.Tensor, position: int | torch.Tensor = 0) -> torch.Tensor:
        """x: [B, T, ..., dim] with time at dim 1; `position` is the absolute index of x[:, 0],
        or a [B, T] tensor of every token's position (a padded batch's rows count their own)."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"x must be a floating tensor, got {getattr(x, 'dtype', type(x))}")
        if x.dim() < 3 or x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape [B, T, ..., {self.dim}], got {tuple(x.shape)}")
        B, T = x.shape[:2]
        if isinstance(position, torch.Tensor):
            if tuple(position.shape) != (B, T):
                raise ValueError(f"position must be an int or a [B, T] = {(B, T)} tensor, got "
                                 f"shape {tuple(position.shape)}")
            pos = position.to(device=x.device, dtype=torch.float64)  # [B, T]
        else:
            pos = torch.arange(position, position + T, device=x.device,
                               dtype=torch.float64).expand(1, T)  # [1, T]
        # no buffer: recomputing θ is cheap, and it cannot be lost or cast by .to() / loading
        inv_freq = self.base ** (-torch.arange(0, self.dim, 2, device=x.device,
                                               dtype=torch.float64) / self.dim)  # [dim/2]
        angles = pos.unsqueeze(-1) * inv_freq  # [B or 1, T, dim/2]
        angles = angles.view(*pos.shape, *([1] * (x.dim() - 3)), -1)  # over middle dims
        cos, sin = angles.cos().float(), angles.sin().float()
        x1, x2 = x.float().chunk(2, dim=-1)
        out = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
        return out.to(x.dtype)
