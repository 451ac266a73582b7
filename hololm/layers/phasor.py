"""PhasorAttention: the Holo-Transformer "LongAttention" layer.

hd_dim complex channels split over H heads of Dh = hd_dim / H. For token t at absolute
position p_t (p_t = position + t, `position` = tokens already in the state):

    x̃_t = ShortConv_k(x)_t                   causal depthwise conv (k = key_conv_size; k = 1: x̃ = x)
    v_t = W_v x_t                             value, real (W_v x̃_t with "v" in conv_targets)
    φ_t = π tanh(W_k x̃_t)                    key content phase
    ψ_t = π tanh(W_q x_t)                     query content phase ("Dynamic Query Head"; W_q x̃_t
                                              with "q" in conv_targets)
    M_t = M_{t-1} + v_t ⊙ e^{i(φ_t + p_t ω)}                 key = content ⊙ position
    r_t = M_t ⊙ e^{-i(ψ_t + (p_t − δ_h) ω)} / sqrt(p_t + 1)   retrieval
    y_t = o_proj(LayerNorm([Re r_t, Im r_t]))                 ("real" mode: Re r_t only)

ω: fixed random Fourier frequencies `generate_random_phasors(hd_dim, phasor_seed)` viewed
[H, Dh] (always float64; `multi_scale` scales head h by 2^-h so heads resolve position at 1, 2,
4, ... tokens; `use_position=False` drops the position term). δ_h: learned per-head query offset
(`learned_query_offset`, init 0) — a query at p_t reads the key written at p_t − δ_h.

`dual_path` adds a content-only associative memory (the induction-head construction): the key
of token s is the content of the *previous* token, so a query with the content of x_t reads the
value of the token that followed an earlier occurrence of x_t:

    A_t = A_{t-1} + v'_t ⊙ e^{iφ'_t},  φ'_t = π tanh(W'_k x_{t-1}),  v'_t = W'_v x_t
    a_t = A_t ⊙ e^{-iψ'_t} / sqrt(p_t + 1),  ψ'_t = π tanh(W'_q x_t)

and both retrievals are concatenated before the LayerNorm.

`learned_decay` makes the memory forget: M_t = λ_h M_{t-1} + v_t κ_t with a learned per-head
λ_h = σ(b_h) (init: 1 − λ from 1/32 at head 0 to 1/4096 at the last), read with 1/sqrt(n_t),
n_t = Σ_k λ_h^{2k} (`hololm.ops.phasor.decayed`). Holo-Transformer declares "no decay".

`num_copies` = C > 1 keeps C memories of the same values under fixed random permutations π_c of
the key and query phases (Associative LSTM, Danihelka et al. 2016): copy c binds value channel
j to key channel π_c(j), so the crosstalk of the other stored items differs between copies and
their mean, r_t = (1/C) Σ_c r_t^c, divides its variance by C — at C times the state.

Packed documents (`pad.starts`): at a document's first token the memories drop what they hold
(the ops' `reset`), the short conv reads nothing across the start and the dual path's x_{t-1}
is zeros there. The phases keep the chunk's absolute positions p_t: every key and query of a
document carries the same extra p_start·ω, which the retrieval cancels (up to the rounding of
the phases, ~1e-7 rad in float32), so only the scale needs the position within the document,
sqrt(pad.positions + 1) (as for padding); the decayed memory takes pad.positions as its counts.

State: {"memory": M [B, H, C·Dh] complex64, "assoc": A [B, H, Dh] complex64 (dual_path),
"prev": x_{T-1} [B, 1, d] (dual_path), "conv": last k−1 inputs [B, k−1, d] (k > 1)}.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hololm.layers.base import Mixer, Padding, State, check_mixer_input, check_state, last_real
from hololm.layers.short_conv import ShortConv
from hololm.ops.phasor import generate_random_phasors, phasor_memory_parts, phasor_memory_step
from hololm.ops.phasor.decayed import initial_log_decay, phasor_memory_decayed


def _content_phase(u: torch.Tensor) -> torch.Tensor:
    """π·tanh(u), computed as 2π·σ(2u) − π (the same function): torch's CPU tanh measured 3–6x
    slower than its sigmoid (bf16 / fp32). The two differ by rounding only, and in absolute
    terms, which is what the phase's cos / sin see."""
    return torch.sigmoid(u * 2).mul(2 * math.pi).sub(math.pi)


def _memory(v: torch.Tensor, phi: torch.Tensor, psi: torch.Tensor, freqs: torch.Tensor | None,
            shift: torch.Tensor | None, state: torch.Tensor | None, position: int,
            reset: torch.Tensor | None, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """phasor_memory_parts for T > 1, the step form for T == 1 (same numbers); reset [B, T]
    bool or None → (Re r, Im r) as parts [B, T, 2, H, Dh] and the memory."""
    if v.shape[1] == 1:
        r, m = phasor_memory_step(v[:, 0], phi[:, 0], psi[:, 0], state, position, freqs, shift,
                                  reset=None if reset is None else reset[:, 0], backend=backend)
        return torch.view_as_real(r).permute(0, 3, 1, 2).unsqueeze(1), m  # [B, 1, 2, H, Dh]
    return phasor_memory_parts(v, phi, psi, freqs, offset=position, query_shift=shift,
                               initial_state=state, reset=reset, backend=backend)


def _count_real_tokens(r: torch.Tensor, position: int, pad: Padding | None) -> torch.Tensor:
    """The op divides by sqrt(p_t + 1) at the chunk's absolute positions; a padded row divides
    by its own count of real tokens instead (of its document's, with packed documents). r:
    parts [B, T, 2, H, Dh]. The phases need no correction: the positions of a row (of a
    document) are shifted by a constant, which its queries undo."""
    if pad is None:
        return r
    B, T = pad.keep.shape
    absolute = torch.arange(position + 1, position + T + 1, device=r.device, dtype=torch.float64)
    factor = (absolute / (pad.positions + 1).to(torch.float64)).sqrt()  # [B, T]
    return r * factor.to(r.dtype).view(B, T, 1, 1, 1)


class PhasorAttention(Mixer):
    def __init__(self, d_model: int, hd_dim: int, n_heads: int, *, phasor_seed: int = 0,
                 multi_scale: bool = False, use_position: bool = True, dual_path: bool = False,
                 key_conv_size: int = 4, learned_query_offset: bool = False,
                 output_mode: str = "complex", conv_targets: str = "k", num_copies: int = 1,
                 learned_decay: bool = False, backend: str = "auto"):
        super().__init__()
        self.backend = backend  # the phasor memory's (hololm/ops/backends.py)
        if hd_dim % n_heads:
            raise ValueError(f"hd_dim ({hd_dim}) must be divisible by n_heads ({n_heads})")
        if output_mode not in ("complex", "real"):
            raise ValueError(f"output_mode must be 'complex' or 'real', got {output_mode!r}")
        if key_conv_size < 1:
            raise ValueError(f"key_conv_size must be >= 1, got {key_conv_size}")
        if learned_query_offset and not use_position:
            raise ValueError("learned_query_offset needs use_position=True")
        if not conv_targets or set(conv_targets) - set("qkv") or "k" not in conv_targets:
            raise ValueError(f"conv_targets names which of q, k, v read the short conv's output "
                             f"and includes k (e.g. 'k', 'qkv'), got {conv_targets!r}")
        if isinstance(num_copies, bool) or not isinstance(num_copies, int) or num_copies < 1:
            raise ValueError(f"num_copies must be a positive int, got {num_copies!r}")
        self.conv_targets, self.num_copies = conv_targets, num_copies
        self.d_model, self.hd_dim, self.n_heads = d_model, hd_dim, n_heads
        self.head_dim = hd_dim // n_heads
        self.phasor_seed, self.multi_scale = phasor_seed, multi_scale
        self.use_position = use_position
        self.dual_path, self.key_conv_size, self.output_mode = dual_path, key_conv_size, output_mode

        self.v_proj = nn.Linear(d_model, hd_dim, bias=False)
        self.k_proj = nn.Linear(d_model, hd_dim, bias=False)
        self.q_proj = nn.Linear(d_model, hd_dim, bias=False)
        self.key_conv = ShortConv(d_model, key_conv_size) if key_conv_size > 1 else None
        self.state_keys = {"memory", *(["conv"] if self.key_conv is not None else []),
                           *(["assoc", "prev"] if dual_path else [])}
        # channel j of copy c reads key channel copy_index[c·Dh + j] (copy 0: the identity): a
        # fixed function of phasor_seed, kept off the module's buffers (from_pretrained leaves
        # unsaved buffers uninitialised) and moved to the inputs' device when used
        self.copy_index = self._copy_index()
        # saved with the weights, so a checkpoint carries the exact frequencies it was trained with
        self.register_buffer("freqs", self._frequencies() if use_position else None)
        self.query_offset = nn.Parameter(torch.zeros(n_heads)) if learned_query_offset else None
        # σ(decay_logit) = λ per head; None: no decay (the original)
        self.decay_logit = (nn.Parameter(initial_log_decay(n_heads)) if learned_decay
                            else None)
        if dual_path:
            self.assoc_v_proj = nn.Linear(d_model, hd_dim, bias=False)
            self.assoc_k_proj = nn.Linear(d_model, hd_dim, bias=False)
            self.assoc_q_proj = nn.Linear(d_model, hd_dim, bias=False)
        n_features = hd_dim * (2 if output_mode == "complex" else 1) * (2 if dual_path else 1)
        self.norm = nn.LayerNorm(n_features)
        self.o_proj = nn.Linear(n_features, d_model, bias=False)

    def _copy_index(self) -> torch.Tensor | None:
        """[C·Dh] long on the CPU (also when built under a meta device): the identity, then
        C − 1 random permutations of the Dh channels."""
        if self.num_copies == 1:
            return None
        gen = torch.Generator().manual_seed(self.phasor_seed + 1)
        perms = [torch.randperm(self.head_dim, generator=gen, device="cpu")
                 for _ in range(self.num_copies - 1)]
        return torch.cat([torch.arange(self.head_dim, device="cpu"), *perms])

    def _frequencies(self) -> torch.Tensor:
        """ω, float64 [H, C·Dh] (each copy's key channels); multi_scale: head h scaled by 2^-h."""
        freqs = generate_random_phasors(self.hd_dim, seed=self.phasor_seed)
        freqs = freqs.view(self.n_heads, self.head_dim)
        if self.multi_scale:
            freqs = freqs * 2.0 ** -torch.arange(self.n_heads, dtype=torch.float64)[:, None]
        return freqs if self.num_copies == 1 else freqs[:, self.copy_index]

    def reset_frequencies(self) -> None:
        """Rebuild ω from the seed, in float64, on its current device."""
        if self.freqs is not None:
            self.freqs = self._frequencies().to(self.freqs.device)

    def _apply(self, fn, recurse=True):
        # .to(dtype) / .bfloat16() cast floating buffers too, and .to_empty() leaves them
        # uninitialised: rebuild ω afterwards
        super()._apply(fn, recurse)
        self.reset_frequencies()
        return self

    def reset_parameters(self) -> None:
        """δ = 0, the decays at their initial spread, and ω rebuilt from the seed."""
        if self.query_offset is not None:
            nn.init.zeros_(self.query_offset)
        if self.decay_logit is not None:
            with torch.no_grad():
                self.decay_logit.copy_(initial_log_decay(self.n_heads))
        self.reset_frequencies()

    def _heads(self, z: torch.Tensor) -> torch.Tensor:
        return z.view(*z.shape[:2], self.n_heads, self.head_dim)  # [B, T, H, Dh]

    def _features(self, parts: torch.Tensor) -> torch.Tensor:
        """parts [B, T, 2, H, Dh] → [Re r, Im r] [B, T, 2·hd_dim] (real mode: Re r only)."""
        if self.output_mode == "real":
            parts = parts[:, :, :1]
        return parts.reshape(*parts.shape[:2], -1)

    def forward(self, x: torch.Tensor, state: State | None = None, position: int = 0,
                pad: Padding | None = None) -> tuple[torch.Tensor, State]:
        check_mixer_input(x, self.d_model, position, self.o_proj.weight)
        check_state(state, self.state_keys, x.shape[0])
        state = state or {}
        new_state: State = {}
        keep = starts = None
        if pad is not None:  # zero inputs write nothing (v = 0) and feed the convs zeros
            x, keep, starts = pad.zero_pads(x), pad.mask, pad.starts
        x_conv = x
        if self.key_conv is not None:
            x_conv, new_state["conv"] = self.key_conv(x, state.get("conv"), keep, starts)
        v = self._heads(self.v_proj(x_conv if "v" in self.conv_targets else x))  # [B, T, H, Dh]
        if pad is not None and "v" in self.conv_targets:  # the conv sees real tokens at pads
            v = pad.zero_pads(v)
        phi = _content_phase(self._heads(self.k_proj(x_conv)))  # [B, T, H, Dh]
        psi = _content_phase(self._heads(self.q_proj(x_conv if "q" in self.conv_targets else x)))
        if self.copy_index is not None:  # [B, T, H, C·Dh]: values repeated, phases permuted
            v = v.repeat(1, 1, 1, self.num_copies)
            index = self.copy_index.to(phi.device)
            phi, psi = phi[..., index], psi[..., index]
        if self.decay_logit is None:
            r, new_state["memory"] = _memory(v, phi, psi, self.freqs, self.query_offset,
                                             state.get("memory"), position, starts, self.backend)
            r = _count_real_tokens(r, position, pad)
        else:  # the op counts each row's real tokens itself
            r, new_state["memory"] = phasor_memory_decayed(
                v, phi, psi, self.freqs, F.logsigmoid(self.decay_logit.float()),
                offset=position, query_shift=self.query_offset,
                initial_state=state.get("memory"), keep=keep,
                counts=None if pad is None else pad.positions, reset=starts, backend=self.backend)
        if self.copy_index is not None:  # the copies' mean, [B, T, 2, H, Dh]
            r = r.unflatten(-1, (self.num_copies, self.head_dim)).mean(-2)
        features = [self._features(r)]
        if self.dual_path:
            prev = state.get("prev")  # [B, 1, d]: the token before this chunk (zeros at start)
            prev = x.new_zeros(x.shape[0], 1, x.shape[2]) if prev is None else prev.to(x.dtype)
            x_prev = torch.cat([prev, x[:, :-1]], dim=1)  # [B, T, d]: x_{t-1}
            if starts is not None:  # a document's first token has no previous token
                x_prev = torch.where(starts[..., None], 0.0, x_prev)
            v2 = self._heads(self.assoc_v_proj(x))
            phi2 = _content_phase(self._heads(self.assoc_k_proj(x_prev)))
            psi2 = _content_phase(self._heads(self.assoc_q_proj(x)))
            a, new_state["assoc"] = _memory(v2, phi2, psi2, None, None, state.get("assoc"),
                                            position, starts, self.backend)  # [B, T, 2, H, Dh]
            if keep is None:
                new_state["prev"] = x[:, -1:].clone()
            else:  # the last real token (prev itself when the chunk has none)
                held = torch.ones_like(keep[:, :1])
                new_state["prev"] = last_real(torch.cat([prev, x], dim=1),
                                              torch.cat([held, keep], dim=1), 1)
            features.append(self._features(_count_real_tokens(a, position, pad)))
        h = features[0] if len(features) == 1 else torch.cat(features, dim=-1)
        h = h.to(x.dtype)  # [B, T, n_features]
        return self.o_proj(self.norm(h)), new_state

    def state_bytes(self, batch_size: int, context_len: int) -> int:
        act = self.o_proj.weight.element_size()  # conv / prev buffers: activation dtype
        mem = 2 * max(act, 4)  # complex64 (complex128 for a float64 module)
        per_row = self.hd_dim * self.num_copies * mem
        if self.key_conv is not None:
            per_row += (self.key_conv_size - 1) * self.d_model * act
        if self.dual_path:
            per_row += self.hd_dim * mem + self.d_model * act
        return batch_size * per_row
