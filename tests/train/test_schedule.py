"""Warmup + cosine schedule: its shape and a state_dict round trip."""

from __future__ import annotations

import math

import pytest
import torch

from hololm.train.schedule import build_scheduler, warmup_cosine


def test_warmup_then_cosine_to_floor():
    factor = warmup_cosine(warmup_steps=4, total_steps=14, min_ratio=0.1)
    assert [factor(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert factor(4) == 1.0
    assert factor(9) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2)))
    assert factor(14) == pytest.approx(0.1) and factor(100) == pytest.approx(0.1)
    values = [factor(s) for s in range(4, 15)]
    assert values == sorted(values, reverse=True)


def test_no_warmup():
    assert warmup_cosine(0, 10)(0) == 1.0


def test_scheduler_resumes():
    def make():
        param = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.AdamW([param], lr=1e-3)
        return opt, build_scheduler(opt, 3, 10)

    opt, sched = make()
    lrs = []
    for _ in range(8):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    opt2, sched2 = make()
    for _ in range(4):
        opt2.step()
        sched2.step()
    state = (opt2.state_dict(), sched2.state_dict())
    opt3, sched3 = make()
    opt3.load_state_dict(state[0])
    sched3.load_state_dict(state[1])
    resumed = []
    for _ in range(4):
        opt3.step()
        sched3.step()
        resumed.append(opt3.param_groups[0]["lr"])
    assert resumed == lrs[4:]
