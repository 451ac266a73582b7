"""Causal depthwise convolution over a few tokens (Mamba / fla "short conv"), with a state that
holds the last `kernel_size - 1` inputs so that decoding continues exactly."""

from __future__ import annotations

import torch
from torch import nn

from hololm.layers.base import check_activations, last_real


class ShortConv(nn.Module):
    """y_t = Σ_{j<k} w_j ⊙ x_{t-j} per channel (+ bias). x: [B, T, C]; state: [B, k-1, C]."""

    def __init__(self, channels: int, kernel_size: int = 4, bias: bool = True):
        super().__init__()
        if kernel_size < 1:
            raise ValueError(f"kernel_size must be >= 1, got {kernel_size}")
        self.channels, self.kernel_size = channels, kernel_size
        self.conv = nn.Conv1d(channels, channels, kernel_size, groups=channels, bias=bias)

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None,
                keep: torch.Tensor | None = None, starts: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """`keep` [B, T] bool marks real tokens of a padded batch (their inputs already zeroed
        at pads by the caller): the state handed on holds the last k-1 *real* inputs. `starts`
        [B, T] bool marks the first tokens of packed documents: a tap never reads across one
        (the buffer and earlier documents read as zeros), and the state handed on holds only
        inputs of the last document."""
        check_activations(x, self.channels, self.conv.weight)
        B, T, C = x.shape
        k = self.kernel_size
        if state is not None and (not isinstance(state, torch.Tensor)
                                  or tuple(state.shape) != (B, k - 1, C)):
            shape = getattr(state, "shape", type(state).__name__)
            raise ValueError(f"state must be a tensor of shape {(B, k - 1, C)} (the last "
                             f"kernel_size - 1 inputs), got {shape}")
        if state is None:
            state = x.new_zeros(B, k - 1, C)
        window = torch.cat([state.to(x.dtype), x], dim=1)  # [B, k-1+T, C]
        if starts is not None:  # the document of every window entry, the buffer's being 0
            docs = torch.cat([starts.new_zeros(B, k - 1, dtype=torch.long),
                              starts.long().cumsum(1)], dim=1)  # [B, k-1+T]
        # k shifted multiply-adds in the [B, T, C] layout instead of Conv1d: on CPU the
        # depthwise Conv1d backward took ~50x longer than these element-wise passes
        weight = self.conv.weight[:, 0].to(x.dtype)  # [C, k]; tap j reads x_{t-(k-1-j)}
        y = window[:, k - 1:] * weight[:, k - 1]
        if self.conv.bias is not None:
            y = y + self.conv.bias.to(x.dtype)
        for j in range(k - 1):  # a loop over the k - 1 taps, not over T
            taps = window[:, j:j + T]
            if starts is not None:
                taps = taps * (docs[:, j:j + T] == docs[:, k - 1:]).unsqueeze(-1).to(x.dtype)
            y = torch.addcmul(y, taps, weight[:, j])
        if starts is not None:
            window = window * (docs == docs[:, -1:]).unsqueeze(-1).to(x.dtype)
        if keep is not None:
            held = torch.ones(B, k - 1, dtype=torch.bool, device=x.device)
            return y, last_real(window, torch.cat([held, keep], dim=1), k - 1)
        # a copy: a view would keep the whole window (the prompt) alive in a decoding cache
        return y, window[:, window.shape[1] - (k - 1):].clone()
