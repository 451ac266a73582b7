"""Holographic binding and unbinding: circular convolution and correlation over the last dim.

For vectors of length D, with indices taken mod D:

    bind    (x ⊛ y)[k] = Σ_j x[j] · y[(k − j) mod D]        fft_circular_conv(x, y)
    unbind  (x ⋆ y)[k] = Σ_j x[(j + k) mod D] · y[j]        fft_circular_corr(x, y)

With X = DFT(x), Y = DFT(y): DFT(x ⊛ y) = X · Y and DFT(x ⋆ y) = X · conj(Y), so both cost
O(D log D) through rfft / irfft with n = D (odd D included).

Convolution is commutative; correlation is not: corr takes the TRACE first and the KEY second,
as HoloSpectralNet documents (`retrieved = fft_circular_corr(hologram, unbind_key)`), and
corr(y, x)[k] = corr(x, y)[−k]. For a random key a with i.i.d. N(0, 1/D) entries (unit expected
norm), corr(conv(a, b), a) ≈ b plus noise of the size of ‖b‖ (Plate's holographic reduced
representations), so `fft_circular_corr(trace, key)` unbinds what `fft_circular_conv(key, item)`
bound; the mirrored call `fft_circular_corr(key, trace)` returns b reversed (b[−k]), not b.

Shapes: `x` and `y` share the last dim D; their leading dims broadcast as in torch (a key [D]
against activations [B, T, D] or [B, T, H, D]).

Dtypes: the result has the promoted dtype of `x` and `y`. float16 / bfloat16 / float32 inputs are
transformed in float32 (torch's CPU FFT has no bfloat16) and cast back; float64 stays float64.

`circular_conv_ref` / `circular_corr_ref` are the O(D²) definitions, written as a matmul with the
roll matrix R[..., k, j] = y[..., index(k, j)]: the references the tests compare against.
"""

from __future__ import annotations

import torch

from hololm.ops._validate import require_tensor


def _check(x: torch.Tensor, y: torch.Tensor) -> tuple[int, torch.dtype]:
    """Validate a pair of operands; return (D, result dtype)."""
    require_tensor("x", x)
    require_tensor("y", y)
    if x.dim() == 0 or y.dim() == 0:
        raise ValueError(f"x and y need a feature dim, got shapes {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"x and y must have the same last dim, got {x.shape[-1]} and "
                         f"{y.shape[-1]}")
    if x.shape[-1] == 0:
        raise ValueError("x and y must have a non-empty last dim")
    try:
        torch.broadcast_shapes(x.shape, y.shape)
    except RuntimeError as err:
        raise ValueError(f"leading dims of x {tuple(x.shape)} and y {tuple(y.shape)} do not "
                         f"broadcast") from err
    return x.shape[-1], torch.promote_types(x.dtype, y.dtype)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def fft_circular_conv(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Bind: (x ⊛ y)[k] = Σ_j x[j] y[(k − j) mod D] over the last dim (commutative)."""
    d, dtype = _check(x, y)
    work = _compute_dtype(dtype)
    xf = torch.fft.rfft(x.to(work), n=d)  # [..., D // 2 + 1]
    yf = torch.fft.rfft(y.to(work), n=d)
    return torch.fft.irfft(xf * yf, n=d).to(dtype)


def fft_circular_corr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Unbind: (x ⋆ y)[k] = Σ_j x[(j + k) mod D] y[j] over the last dim; `x` is the trace, `y`
    the key, so that fft_circular_corr(fft_circular_conv(a, b), a) ≈ b."""
    d, dtype = _check(x, y)
    work = _compute_dtype(dtype)
    xf = torch.fft.rfft(x.to(work), n=d)  # [..., D // 2 + 1]
    yf = torch.fft.rfft(y.to(work), n=d)
    return torch.fft.irfft(xf * yf.conj(), n=d).to(dtype)


def _roll_matmul(w: torch.Tensor, r: torch.Tensor, sign: int) -> torch.Tensor:
    """out[..., k] = Σ_j w[..., j] · r[..., (sign·j + k) mod D] for checked operands: conv is
    (w, r) = (x, y) with sign −1, corr (w, r) = (y, x) with sign +1."""
    d, dtype = w.shape[-1], torch.promote_types(w.dtype, r.dtype)
    work = _compute_dtype(dtype)
    k = torch.arange(d, device=r.device)
    index = (k[:, None] + sign * k[None, :]) % d  # [D, D]: index[k, j]
    roll = r.to(work)[..., index]  # [..., D, D]: roll[..., k, j] = r[..., index[k, j]]
    out = w.to(work).unsqueeze(-2) @ roll.transpose(-1, -2)  # [..., 1, D]
    return out.squeeze(-2).to(dtype)


def circular_conv_ref(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Reference for `fft_circular_conv`: Σ_j x[j] y[(k − j) mod D] as an O(D²) matmul."""
    _check(x, y)
    return _roll_matmul(x, y, sign=-1)


def circular_corr_ref(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Reference for `fft_circular_corr`: Σ_j x[(j + k) mod D] y[j] as an O(D²) matmul."""
    _check(x, y)
    return _roll_matmul(y, x, sign=1)
