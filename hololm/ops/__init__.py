"""Pure-function memory ops, layout [B, T, H, D]. Each memory has a reference loop, a fast
parallel/chunked form and a single-token step; all return (output, final_state).

Under torch.compile the fast forms built on custom autograd Functions run eagerly
(`torch.compiler.disable`; the model around them still compiles): their forwards write into
buffers through ctypes kernels or `out=` slices, which dynamo traced into silent garbage (a NaN
loss for a compiled holo model) or an IndexError. Compiling them did not pay on CPU anyway:
whole models trained 0.96–1.05x as fast compiled.
"""

from hololm.ops.circular import (
    circular_conv_ref,
    circular_corr_ref,
    fft_circular_conv,
    fft_circular_corr,
)
from hololm.ops.cumsum import blocked_cumsum, cumsum
from hololm.ops.delta_rule import gated_delta_rule, gated_delta_rule_ref, gated_delta_rule_step
from hololm.ops.diagonal_scan import (
    gated_diagonal_scan,
    gated_diagonal_scan_ref,
    gated_diagonal_scan_step,
)
from hololm.ops.long_conv import causal_conv_ref, causal_conv_step, causal_fft_conv
from hololm.ops.matrix_memory import gated_matrix_memory, gated_matrix_memory_step, holo_scan
from hololm.ops.phasor import (
    generate_random_phasors,
    phasor_memory,
    phasor_memory_ref,
    phasor_memory_step,
    position_phases,
    rope_frequencies,
)

__all__ = [
    "blocked_cumsum",
    "causal_conv_ref",
    "causal_conv_step",
    "causal_fft_conv",
    "circular_conv_ref",
    "circular_corr_ref",
    "cumsum",
    "fft_circular_conv",
    "fft_circular_corr",
    "gated_delta_rule",
    "gated_delta_rule_ref",
    "gated_delta_rule_step",
    "gated_diagonal_scan",
    "gated_diagonal_scan_ref",
    "gated_diagonal_scan_step",
    "gated_matrix_memory",
    "gated_matrix_memory_step",
    "generate_random_phasors",
    "holo_scan",
    "phasor_memory",
    "phasor_memory_ref",
    "phasor_memory_step",
    "position_phases",
    "rope_frequencies",
]
