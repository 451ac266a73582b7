"""hololm: holographic and associative-memory language models in PyTorch."""

from hololm import ops
from hololm.ops import (
    fft_circular_conv,
    fft_circular_corr,
    generate_random_phasors,
    holo_scan,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "fft_circular_conv",
    "fft_circular_corr",
    "generate_random_phasors",
    "holo_scan",
    "ops",
]
