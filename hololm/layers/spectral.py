"""HoloSpectralNet layers: holographic mixer, causal spectral gate, lite
channel mix, and the block that chains them.

HolographicMixer — for x [B, T, d], keys b (bind) and u (unbind) in R^d, ⊛ / ⋆ circular
convolution / correlation over the feature dim (`hololm.ops.circular`), p_t = position + t:

    bound_t     = b ⊛ x_t                                  bind
    hologram_t  = λ · hologram_{t−1} + bound_t             bundle (λ = 1 without decay: a cumsum)
    y_t         = (hologram_t ⋆ u) / sqrt(n_t)             unbind
    n_t         = Σ_{k=0}^{p_t} λ^{2k}                     = p_t + 1 without decay

The 1/sqrt(n_t) deviates from HoloSpectralNet, which divides by nothing: a sum of t roughly
independent items has a norm growing like sqrt(t), so the original's output grows with context
(decoding at position 100 000 would feed the next layer inputs ~10× those seen in training at
1 000).
Dividing by sqrt(n_t) — the root of the sum of the squared bundle weights — keeps the retrieval
of uncorrelated items at unit scale at every position, as PhasorAttention does (a component
shared by all tokens still grows like sqrt(t)).
Note that with one key pair the mixer is linear: in Fourier space y_t = conj(U)·B·Σ λ^{t−s} X_s,
one learned circular filter over features applied to a (decayed) running sum of the inputs. The
forward computes it that way round, filter (b ⋆ u) ⊛ x_s first and bundle after, which takes two
FFTs over the sequence instead of four; the hologram it hands on is still h_t above.

SpectralGate — g: max_seq_len // 2 + 1 learned gate logits (the original's count). The original
computes irfft(rfft(x over time) · σ(g)): a *circular* convolution over the sequence, so y_0 sees
the last token. Ours keeps the frequency response and makes the convolution causal:

    h   = irfft(σ(g), n=N)                     real kernel of N = max_seq_len taps
    y_t = Σ_{j=0}^{min(t, N−1)} h_j · x_{t−j}   shared by all channels (`causal_fft_conv`)

σ(g) is real (zero phase), so h is symmetric: h_j = h_{N−j}. A tap j > t, which in the original
wraps around to the future token x_{t−j+N}, here reads x_{t−j} (zero before the start), so the gate
weighs x_{t−j} and x_{t−N+j} alike. Sequences longer than N work: taps beyond N are
zero, so the gate sees the last N tokens and the hologram carries everything older. Decoding
keeps a buffer of the last N − 1 inputs (`causal_conv_step`), so per-token cost and state never
grow past N. Init: g = 0, σ(g) = ½ at every frequency, h = ½·δ_0 — a scaled identity that mixes
nothing across time until the gates learn which frequencies to pass.

LiteChannelMix — down: d → rank, up: rank → d (no biases), s ∈ R^d initialised to 0.1:

    branch(x) = s ⊙ up(GELU(down(x)))          forward(x) = x + branch(x)

HoloSpectralBlock (pre-LN, three residual branches):

    x = x + Mixer(LN1(x));   x = x + Gate(LN2(x));   x = x + branch(LN3(x))

With `conv_size` = k > 0 (off in HoloSpectralNet's setting) the mixer reads
SiLU(ShortConv_k(LN1(x))): a causal depthwise convolution over the last k tokens puts a token's
neighbours into what it binds.

Parameters: mixer 2d, gate N // 2 + 1, channel mix 2·d·rank + d, block 9d + 2·d·rank + N // 2 + 1
(three LayerNorms add 6d).

Call forms. HoloSpectralNet's: `HolographicMixer(dim)(x)`, `SpectralGate(max_seq_len)(x)`,
`LiteChannelMix(dim, rank)(x)` and `HoloSpectralBlock(dim, max_seq_len, rank)(x)` return the
tensor y [B, T, d] for a whole sequence from its start. The model's (the `Mixer` contract):
`layer(x, state, position)`, as the backbone calls its layers, with `position` the number of
tokens already in `state` (0 and None at the start): the stateful three then return `(y, state)`
to continue from. A state without its position is refused: the mixer's 1/sqrt(n_t) needs it.

Packed documents (`pad.starts`, `hololm.layers.base.Padding`): at a document's first token every
part starts afresh, so each document's outputs are those it has alone. The mixer's bundle drops
the hologram entering that token (the diagonal scan's `reset`; without decay too, as a scan
with λ = 1 in place of the cumsum), its n_t counts from the document's start (p_t =
pad.positions, the index in the document), and the hologram handed on holds the last document
only; the gate convolves each document alone (`causal_fft_conv`'s `reset`: earlier documents
and the buffer read as zeros) and hands on a buffer holding zeros before the last document; the
short conv reads no input across a start.

State (dicts of tensors, batch first; float32, float64 for a float64 layer, whatever x's dtype):
mixer {"hologram": [B, d]}, gate {"buffer": [B, N − 1, d]} (the last N − 1 gate inputs, zeros
before the start), block: both keys in one dict, and {"conv": [B, k − 1, d]} (the last k − 1
mixer inputs, x's dtype) with conv_size = k.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hololm.layers.base import (
    Mixer,
    Padding,
    State,
    check_activations,
    check_mixer_input,
    check_state,
    last_real,
)
from hololm.layers.short_conv import ShortConv
from hololm.ops._validate import require_positive_int, require_state
from hololm.ops.circular import fft_circular_conv, fft_circular_corr
from hololm.ops.cumsum import cumsum
from hololm.ops.diagonal_scan import gated_diagonal_scan, gated_diagonal_scan_step
from hololm.ops.long_conv import causal_conv_step, causal_fft_conv

SCALE_INIT = 0.1  # LiteChannelMix's per-channel scale at init


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 for float64 activations, float32 otherwise (bf16 / fp16 models included)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _state_size(param: torch.Tensor) -> int:
    """Bytes per state element: float32, or float64 in a float64 layer."""
    return max(param.element_size(), 4)


def _standalone(state: State | None, position: int | None) -> bool:
    """True for HoloSpectralNet's call layer(x), which returns y only; the model passes
    `position` and gets (y, state). A state given without its position would be read at the
    wrong n_t."""
    if position is not None:
        return False
    if state:
        raise ValueError("a state needs its position (the number of tokens already in it): "
                         "call layer(x, state, position)")
    return True


def _check_input(x: torch.Tensor, dim: int | None, position: int) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 3 or x.shape[1] == 0 or (dim is not None and x.shape[2] != dim):
        want = f"[B, T, {dim}]" if dim is not None else "[B, T, d]"
        raise ValueError(f"x must have shape {want} with T >= 1, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating tensor of activations, got {x.dtype}")
    if isinstance(position, bool) or not isinstance(position, int) or position < 0:
        raise ValueError(f"position must be an int >= 0, got {position!r}")


class HolographicMixer(Mixer):
    """Bind with a learned key, bundle causally over time, unbind with another key (2·dim
    parameters). `decay` in (0, 1) makes the bundle forget: h_t = decay·h_{t−1} + bound_t."""

    def __init__(self, dim: int, decay: float | None = None, backend: str = "auto"):
        super().__init__()
        self.backend = backend  # the diagonal scan's, for a decaying bundle
        self.dim = require_positive_int("dim", dim)
        if decay is not None and not (isinstance(decay, float | int) and 0.0 < decay < 1.0):
            raise ValueError(f"decay must be None or a number in (0, 1), got {decay!r}")
        self.decay = None if decay is None else float(decay)
        self.bind_key = nn.Parameter(torch.empty(dim))
        self.unbind_key = nn.Parameter(torch.empty(dim))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Keys ~ N(0, 1/dim): unit expected norm, so unbind(bind(x)) ≈ x (Plate's HRR)."""
        nn.init.normal_(self.bind_key, std=self.dim ** -0.5)
        nn.init.normal_(self.unbind_key, std=self.dim ** -0.5)

    def _bundle(self, bound: torch.Tensor, h0: torch.Tensor | None,
                pad: Padding | None) -> torch.Tensor:
        """All holograms [B, T, d] of h_t = λ h_{t−1} + bound_t from h_{−1} = h0 (None: zeros);
        a padding token (bound_t = 0) does not decay the hologram, and a document's first token
        (pad.starts) drops it."""
        starts = None if pad is None else pad.starts  # [B, T] bool
        if self.decay is None and starts is None:
            h = cumsum(bound, dim=1)  # [B, T, d]
            return h if h0 is None else h + h0.unsqueeze(1)
        # a cumsum with resets is the scan with λ = 1: exact per document, no loop over them (a
        # cumsum less the sum entering each document must run in float64 to be as exact, and
        # then measured no faster)
        log_decay = torch.full_like(bound, 0.0 if self.decay is None else math.log(self.decay))
        if pad is not None:
            log_decay = pad.zero_pads(log_decay)  # [B, T, d]
        log_decay = log_decay.unsqueeze(2)  # [B, T, 1, d]
        h0 = None if h0 is None else h0.unsqueeze(1)  # [B, 1, d]: one "head"
        if bound.shape[1] == 1:  # the step's [B, H, D] layout with H = 1 is our [B, T=1, d]
            h, _ = gated_diagonal_scan_step(bound, log_decay[:, 0], h0,
                                            reset=None if starts is None else starts[:, 0])
            return h
        h, _ = gated_diagonal_scan(bound.unsqueeze(2), log_decay, h0, backend=self.backend,
                                   reset=starts)
        return h.squeeze(2)

    def _ages(self, T: int, device: torch.device, pad: Padding | None) -> torch.Tensor:
        """λ^{age_s}, age_s the number of real tokens after s (T−1−s without padding), [B or
        1, T] in float64: each input's weight in the last hologram (ones without decay; zero
        before the last document's start with packed documents)."""
        if pad is None:
            age = torch.arange(T - 1, -1, -1, dtype=torch.float64, device=device)[None]
        else:
            keep = pad.keep.to(torch.float64)
            age = keep.flip(1).cumsum(1).flip(1) - keep  # [B, T]
        weight = torch.ones_like(age) if self.decay is None else \
            torch.exp(age * math.log(self.decay))
        if pad is not None and pad.starts is not None:
            documents = pad.chunk_documents()  # [B, T]
            weight = weight * (documents == documents[:, -1:])  # the last document's inputs
        return weight

    def _norm(self, position: int, T: int, device: torch.device,
              pad: Padding | None) -> torch.Tensor:
        """1 / sqrt(n_t) for the T positions from `position` (a padded row: its own count of
        real tokens), [T, 1] or [B, T, 1], in float64."""
        p = torch.arange(position, position + T, device=device, dtype=torch.float64) \
            if pad is None else pad.positions.to(torch.float64)
        if self.decay is None:
            n = p + 1
        else:  # Σ_{k≤p} λ^{2k} = (1 − λ^{2(p+1)}) / (1 − λ²), via expm1 for λ near 1
            two_log = 2 * math.log(self.decay)
            n = torch.expm1((p + 1) * two_log) / math.expm1(two_log)
        return n.rsqrt().unsqueeze(-1)

    def forward(self, x: torch.Tensor, state: State | None = None, position: int | None = None,
                pad: Padding | None = None) -> torch.Tensor | tuple[torch.Tensor, State]:
        """y [B, T, d]; (y, {"hologram": [B, d]}) when `position` is given (module docstring).
        `pad`: padding tokens are skipped (`hololm.layers.base.Padding`)."""
        standalone = _standalone(state, position)
        position = 0 if position is None else position
        _check_input(x, self.dim, position)
        check_state(state, {"hologram"}, x.shape[0])
        B, T, _ = x.shape
        work = _work_dtype(x)
        h0 = None
        if state:
            h0 = require_state("state['hologram']", state["hologram"], (B, self.dim), work)
        if pad is not None:  # zero inputs bind nothing
            x = pad.zero_pads(x)
        inputs, bind, unbind = x.to(work), self.bind_key.to(work), self.unbind_key.to(work)
        # the mixer is linear: (Σ λ^{t−s} (b ⊛ x_s)) ⋆ u = Σ λ^{t−s} ((b ⋆ u) ⊛ x_s), so the
        # sequence takes one filter (2 FFTs over [B, T, d] instead of 4) and the bundle runs on
        # its output, starting from h0 ⋆ u
        filtered = fft_circular_conv(fft_circular_corr(bind, unbind), inputs)  # [B, T, d]
        y0 = None if h0 is None else fft_circular_corr(h0, unbind)  # [B, d]
        y = self._bundle(filtered, y0, pad) * self._norm(position, T, x.device, pad).to(work)
        # the hologram handed on: h_{T−1} = λ^n h0 + b ⊛ Σ_s λ^{age_s} x_s, n real tokens
        weights = self._ages(T, x.device, pad).to(work)  # [B or 1, T]: λ^{age_s}
        hologram = fft_circular_conv(bind, torch.einsum("btd,bt->bd", inputs,
                                                        weights.expand(B, T)))
        if h0 is not None and pad is not None and pad.starts is not None:
            # h0 reaches the end only in a row whose chunk starts no document
            h0 = h0 * (~pad.starts.any(1, keepdim=True)).to(work)  # [B, d]
        if h0 is not None and self.decay is not None and pad is None:
            hologram = hologram + h0 * self.decay**T
        elif h0 is not None and self.decay is not None:
            n = pad.keep.sum(1, keepdim=True).to(torch.float64)  # [B, 1]: real tokens
            hologram = hologram + h0 * torch.exp(n * math.log(self.decay)).to(work)
        elif h0 is not None:
            hologram = hologram + h0
        y = y.to(x.dtype)
        return y if standalone else (y, {"hologram": hologram})

    def state_bytes(self, batch_size: int, context_len: int) -> int:
        """The hologram: batch_size · dim floats, constant in context."""
        return batch_size * self.dim * _state_size(self.bind_key)


class SpectralGate(nn.Module):
    """Causal spectral gate over time with max_seq_len // 2 + 1 gate logits, shared by all
    channels. gate(x) → y; Mixer-like gate(x, state, position) → (y, {"buffer": [B, N − 1, d]}),
    where `position` only selects that form (the buffer holds zeros before the start)."""

    def __init__(self, max_seq_len: int):
        super().__init__()
        self.max_seq_len = require_positive_int("max_seq_len", max_seq_len)
        self.gate = nn.Parameter(torch.empty(max_seq_len // 2 + 1))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Gate logits 0: σ = ½ everywhere, kernel ½·δ_0 (see the module docstring)."""
        nn.init.zeros_(self.gate)

    def kernel(self) -> torch.Tensor:
        """h = irfft(σ(g), n=max_seq_len): [max_seq_len] taps, float32 (float64 for a float64
        gate), h_0 weighting the current token."""
        g = self.gate.to(torch.promote_types(self.gate.dtype, torch.float32))
        return torch.fft.irfft(torch.sigmoid(g), n=self.max_seq_len)

    def forward(self, x: torch.Tensor, state: State | None = None, position: int | None = None,
                pad: Padding | None = None) -> torch.Tensor | tuple[torch.Tensor, State]:
        """y [B, T, d]; (y, {"buffer": …}) when `position` is given (module docstring).
        `pad`: padding inputs count as zeros and stay out of the buffer handed on; each packed
        document (pad.starts) is convolved alone."""
        standalone = _standalone(state, position)
        _check_input(x, None, 0 if position is None else position)
        check_state(state, {"buffer"}, x.shape[0])
        kernel = self.kernel()  # [N], broadcast over the channels of x
        buffer = state["buffer"] if state else None  # [B, N − 1, d]; the op checks it
        starts = None if pad is None else pad.starts  # [B, T] bool
        padded = pad is not None and pad.padded  # else the op's buffer is already the right one
        if padded:
            x = pad.zero_pads(x)
            held = x.new_zeros(x.shape[0], 0, x.shape[2], dtype=_work_dtype(x)) \
                if buffer is None else buffer
        if x.shape[1] == 1:
            y, buffer = causal_conv_step(x[:, 0], kernel, buffer,
                                         reset=None if starts is None else starts[:, 0])
            y = y.unsqueeze(1)  # [B, 1, d]
        else:
            y, buffer = causal_fft_conv(x, kernel, buffer, reset=starts)  # [B, T, d]
        if padded:  # the last real inputs, as many as unpadded (zeros: before start)
            window = torch.cat([held, x.to(held.dtype)], dim=1)  # [B, S + T, d]
            if starts is not None:  # zeros before the last document, as a fresh buffer holds
                documents = torch.cat([starts.new_zeros(starts.shape[0], held.shape[1],
                                                        dtype=torch.long),
                                       pad.chunk_documents()], dim=1)  # [B, S + T]
                window = window * (documents == documents[:, -1:]).unsqueeze(-1)
            ones = torch.ones_like(pad.keep[:, :1]).expand(-1, held.shape[1])
            buffer = last_real(window, torch.cat([ones, pad.keep], dim=1), buffer.shape[1])
        y = y.to(x.dtype)
        return y if standalone else (y, {"buffer": buffer})


class LiteChannelMix(nn.Module):
    """x + scale ⊙ up(GELU(down(x))): 2·dim·rank + dim parameters."""

    def __init__(self, dim: int, rank: int):
        super().__init__()
        self.dim = require_positive_int("dim", dim)
        self.rank = require_positive_int("rank", rank)
        self.down = nn.Linear(dim, rank, bias=False)
        self.up = nn.Linear(rank, dim, bias=False)
        self.scale = nn.Parameter(torch.empty(dim))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """scale = SCALE_INIT (0.1); down / up keep their Linear (or the backbone's) init."""
        nn.init.constant_(self.scale, SCALE_INIT)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch scale ⊙ up(GELU(down(x))), [B, T, d] → [B, T, d]."""
        return self.scale * self.up(F.gelu(self.down(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_activations(x, self.dim, self.scale)
        return x + self.branch(x)


class HoloSpectralBlock(nn.Module):
    """Pre-LN HolographicMixer, SpectralGate and LiteChannelMix, each a residual branch.
    block(x) → x; block(x, state, position) → (x, {"hologram": …, "buffer": …})."""

    kind = "hsn"  # in a model's `mixer_types`

    def __init__(self, dim: int, max_seq_len: int, rank: int, decay: float | None = None,
                 norm_eps: float = 1e-5, conv_size: int = 0):
        super().__init__()
        if isinstance(conv_size, bool) or not isinstance(conv_size, int) or conv_size < 0:
            raise ValueError(f"conv_size must be an int >= 0 (0: no convolution), got "
                             f"{conv_size!r}")
        self.dim = dim
        self.mixer_norm = nn.LayerNorm(dim, eps=norm_eps)
        self.conv = ShortConv(dim, conv_size) if conv_size else None
        self.mixer = HolographicMixer(dim, decay)
        self.gate_norm = nn.LayerNorm(dim, eps=norm_eps)
        self.gate = SpectralGate(max_seq_len)
        self.channel_norm = nn.LayerNorm(dim, eps=norm_eps)
        self.channel_mix = LiteChannelMix(dim, rank)

    def forward(self, x: torch.Tensor, state: State | None = None, position: int | None = None,
                pad: Padding | None = None) -> torch.Tensor | tuple[torch.Tensor, State]:
        """x [B, T, d]; (x, state) when `position` is given (module docstring)."""
        standalone = _standalone(state, position)
        position = 0 if position is None else position
        check_mixer_input(x, self.dim, position, self.mixer_norm.weight)
        keys = {"hologram", "buffer", *(["conv"] if self.conv is not None else [])}
        check_state(state, keys, x.shape[0])
        state = state or {}
        mixer_state = {"hologram": state["hologram"]} if "hologram" in state else None
        gate_state = {"buffer": state["buffer"]} if "buffer" in state else None
        h, conv_state = self.mixer_norm(x), {}
        if self.conv is not None:
            h = h if pad is None else pad.zero_pads(h)
            keep, starts = (None, None) if pad is None else (pad.mask, pad.starts)
            h, conv_state["conv"] = self.conv(h, state.get("conv"), keep, starts)
            h = F.silu(h)
        y, mixer_state = self.mixer(h, mixer_state, position, pad)
        x = x + y
        y, gate_state = self.gate(self.gate_norm(x), gate_state, position, pad)
        x = x + y
        x = x + self.channel_mix.branch(self.channel_norm(x))
        return x if standalone else (x, {**mixer_state, **gate_state, **conv_state})

    def state_bytes(self, batch_size: int, context_len: int) -> int:
        """The hologram and the gate's buffer of the last min(context_len, max_seq_len − 1)
        inputs: bounded, flat from max_seq_len − 1 tokens on."""
        held = min(context_len, self.gate.max_seq_len - 1)
        conv = (0 if self.conv is None else
                (self.conv.kernel_size - 1) * self.dim * self.mixer_norm.weight.element_size())
        return (self.mixer.state_bytes(batch_size, context_len)
                + batch_size * (held * self.dim * _state_size(self.gate.gate) + conv))
