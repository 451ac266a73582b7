"""Compile every Triton kernel of hololm for a GPU architecture without a GPU (Triton's own
compiler and the ptxas it ships), as the launches configure them, and print one JSON line per
kernel with its registers and stack. Run in a process without TRITON_INTERPRET (the
interpreter replaces the kernels): `python -m tests.ops.triton_compile 90`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, compile

from hololm.ops.diagonal_scan import triton_form as diagonal_scan
from hololm.ops.phasor import triton_form as phasor

INTS = {"T", "C", "L", "N", "PART_STRIDE", "CHANNEL_STRIDE"}
BYTES = {"reset_ptr"}  # the scan's [B, T] resets, bool as uint8
INT8 = {"reset"}  # the phasor's resets, int8 [B, T]


def _cases():
    """(module, kernel, constexprs, pointers read as bf16) as the launches use them; the
    phasor kernels read v, φ and ψ, the scan's x and log γ, in their own dtype."""
    for positional in (True, False):
        for resets in (False, True):
            meta = {"POSITIONAL": positional, "RESET": resets, "BT": phasor.BLOCK_T,
                    "BC": phasor.BLOCK_C}
            bf16 = {"v", "phi", "psi"}
            for kernel in (phasor._forward_sums, phasor._forward, phasor._backward_sums,
                           phasor._backward):
                yield phasor, kernel, meta, bf16
    blocks = {"BLOCK_T": diagonal_scan.BLOCK_T, "BLOCK_C": diagonal_scan.BLOCK_C}
    # x and log γ as given (bf16 under autocast); the chunk ends (LOG False) are float32 and
    # scanned without resets (their decay products hold them)
    for backward in (True, False):
        for log, reset in ((True, True), (True, False), (False, False)):
            yield (diagonal_scan, diagonal_scan._chunk_ends_kernel,
                   {"BACKWARD": backward, "LOG": log, "RESET": reset, **blocks},
                   set() if not log else {"decay_ptr"} if backward else {"x_ptr", "decay_ptr"})
    for reset in (True, False):
        yield (diagonal_scan, diagonal_scan._states_kernel,
               {"LOG": True, "RESET": reset, **blocks}, {"x_ptr", "decay_ptr"})
        yield (diagonal_scan, diagonal_scan._grad_kernel, {"RESET": reset, **blocks},
               {"log_ptr"})


def _resources(cubin: bytes) -> dict:
    """REG and STACK of the one kernel in a cubin, from the cuobjdump that triton ships."""
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([str(tool), "--dump-resource-usage", f.name], check=True,
                              capture_output=True, text=True).stdout
    line = next(line for line in text.splitlines() if "REG:" in line)
    fields = dict(item.split(":") for item in line.split() if ":" in item)
    return {"registers": int(fields["REG"]), "stack": int(fields["STACK"])}


def main(arch: int) -> None:
    assert os.environ.get("TRITON_INTERPRET") != "1", "the interpreter replaces the kernels"
    for module, kernel, constexprs, bf16 in _cases():
        names = kernel.arg_names
        signature = {name: "constexpr" if name in constexprs else "i32" if name in INTS
                     else "*u8" if name in BYTES else "*i8" if name in INT8
                     else "*bf16" if name in bf16 else "*fp32"
                     for name in names}
        source = ASTSource(fn=kernel, signature=signature,
                           constexprs={(names.index(k),): v for k, v in constexprs.items()})
        compiled = compile(source, target=GPUTarget("cuda", arch, 32),
                           options={"num_warps": module.NUM_WARPS})
        print(json.dumps({"kernel": kernel.fn.__name__, **{k: str(v) for k, v in
                          constexprs.items()}, **_resources(compiled.asm["cubin"])}))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 90)
