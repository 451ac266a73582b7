"""`make demo`: a smoke run of the memory ops on this machine.

For each memory it checks that the fast (chunked/parallel) form, the sequential reference and
the token-by-token recurrent form agree, shows a phasor memory retrieving a value stored at
position 2^20, and times the chunked matrix memory against its sequential reference.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from hololm import ops


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = (torch.view_as_real(t) if t.is_complex() else t for t in (a, b))
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def step_all(step, per_token: list[tuple]) -> torch.Tensor:
    """Run a recurrent step form token by token from a zero state; stack the outputs."""
    outs, state = [], None
    for args in per_token:
        y, state = step(*args, state=state)
        outs.append(y)
    return torch.stack(outs, dim=1)


def check_forms(B: int = 2, T: int = 777, H: int = 4, D: int = 32) -> None:
    print(f"three forms agree (B={B} T={T} H={H} D={D}, fp32, relative RMS vs reference):")
    q = F.normalize(torch.randn(B, T, H, D), dim=-1)
    k = F.normalize(torch.randn(B, T, H, D), dim=-1)
    v = torch.randn(B, T, H, D)
    log_f = F.logsigmoid(torch.randn(B, T, H) + 2)
    y_fast, _ = ops.gated_matrix_memory(q, k, v, log_f)
    y_ref, _ = ops.holo_scan(q, k, v, log_f)
    y_step = step_all(ops.gated_matrix_memory_step,
                      [(q[:, t], k[:, t], v[:, t], log_f[:, t]) for t in range(T)])
    print(f"  matrix memory   chunked {rel_err(y_fast, y_ref):.1e}   "
          f"step {rel_err(y_step, y_ref):.1e}")

    x = torch.randn(B, T, H, D)
    log_decay = F.logsigmoid(torch.randn(B, T, H, D) * 4)
    h_fast, _ = ops.gated_diagonal_scan(x, log_decay)
    h_ref, _ = ops.gated_diagonal_scan_ref(x, log_decay)
    h_step = step_all(ops.gated_diagonal_scan_step,
                      [(x[:, t], log_decay[:, t]) for t in range(T)])
    print(f"  diagonal scan   chunked {rel_err(h_fast, h_ref):.1e}   "
          f"step {rel_err(h_step, h_ref):.1e}")

    kp, qp = torch.randn(B, T, H, D), torch.randn(B, T, H, D)
    freqs = ops.generate_random_phasors(H * D, seed=0).view(H, D)
    r_fast, _ = ops.phasor_memory(v, kp, qp, freqs)
    r_ref, _ = ops.phasor_memory_ref(v, kp, qp, freqs)
    state = torch.zeros(B, H, D, dtype=torch.complex64)
    outs = []
    for t in range(T):
        r, state = ops.phasor_memory_step(v[:, t], kp[:, t], qp[:, t], state, t, freqs)
        outs.append(r)
    print(f"  phasor memory   parallel {rel_err(r_fast, r_ref):.1e}  step "
          f"{rel_err(torch.stack(outs, 1), r_ref):.1e}")


def phasor_far_position(position: int = 2**20, D: int = 256) -> None:
    freqs = ops.generate_random_phasors(D, seed=0).view(1, D)
    v = torch.randn(1, 1, 1, D)
    content = torch.randn(1, 1, 1, D)
    r, _ = ops.phasor_memory(v, content, content, freqs, offset=position)
    recovered = r.real * (position + 1) ** 0.5
    print(f"phasor memory: value bound at position {position:,} retrieved with relative error "
          f"{rel_err(recovered, v):.1e}")


def matrix_speed(B: int = 1, T: int = 4096, H: int = 4, D: int = 64) -> None:
    q = F.normalize(torch.randn(B, T, H, D), dim=-1).requires_grad_()
    k = F.normalize(torch.randn(B, T, H, D), dim=-1).requires_grad_()
    v = torch.randn(B, T, H, D, requires_grad=True)
    log_f = F.logsigmoid(torch.randn(B, T, H) + 2).requires_grad_()

    def seconds(fn) -> float:
        t0 = time.perf_counter()
        fn(q, k, v, log_f)[0].square().mean().backward()
        return time.perf_counter() - t0

    seconds(ops.gated_matrix_memory)
    fast, ref = seconds(ops.gated_matrix_memory), seconds(ops.holo_scan)
    print(f"matrix memory fwd+bwd at B={B} H={H} D={D} T={T}: chunked {fast * 1e3:.0f} ms, "
          f"sequential holo_scan {ref * 1e3:.0f} ms -> {ref / fast:.0f}x")


def main() -> None:
    torch.manual_seed(0)
    check_forms()
    phasor_far_position()
    matrix_speed()
    print("\nnext: `make test` runs the test suite; `python -m hololm.bench.ops --help` the "
          "micro-benchmark.")


if __name__ == "__main__":
    main()
