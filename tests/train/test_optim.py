"""Schedules against torch's own schedulers and closed forms; optimizers from config."""

from __future__ import annotations

import math

import pytest
import torch

from supkd.config import OptimConfig, ScheduleConfig
from supkd.train.optim import LrFactor, build_optimizer, build_scheduler


def _lrs(sched_fn, steps: int, lr: float = 0.4) -> list[float]:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr)
    sched = sched_fn(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_cosine_matches_torch_cosine_annealing():
    spe, epochs, m = 7, 5, 1e-3
    ours = _lrs(lambda o: build_scheduler(o, ScheduleConfig(min_lr_factor=m), spe, epochs), 35)
    ref = _lrs(
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=35, eta_min=0.4 * m), 35
    )
    assert ours == pytest.approx(ref, rel=1e-9, abs=1e-12)


def test_onecycle_matches_torch_onecycle():
    cfg = ScheduleConfig(name="onecycle", pct_start=0.3, div_factor=10.0, final_div_factor=100.0)
    ours = _lrs(lambda o: build_scheduler(o, cfg, 10, 4), 40)
    ref = _lrs(
        lambda o: torch.optim.lr_scheduler.OneCycleLR(
            o, max_lr=0.4, total_steps=40, pct_start=0.3, div_factor=10.0,
            final_div_factor=100.0, anneal_strategy="cos", cycle_momentum=False,
        ),
        40,
    )
    assert ours == pytest.approx(ref, rel=1e-9)


def test_step_matches_multistep_and_warmup_is_linear():
    spe = 4
    cfg = ScheduleConfig(name="step", milestones=[2, 3], gamma=0.1)
    ours = _lrs(lambda o: build_scheduler(o, cfg, spe, 4), 16)
    ref = _lrs(
        lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[8, 12], gamma=0.1), 16
    )
    assert ours == pytest.approx(ref, rel=1e-12)
    f = LrFactor(ScheduleConfig(name="cosine", warmup_epochs=1.0), spe, 4)
    assert [f(k) for k in range(4)] == [0.25, 0.5, 0.75, 1.0]
    # After warm-up, a cosine over the remaining 12 steps: the midpoint is 1/2.
    assert f(4 + 6) == pytest.approx(0.5)
    assert LrFactor(ScheduleConfig(name="constant"), spe, 4)(15) == 1.0


def test_schedule_state_resumes_exactly():
    cfg = ScheduleConfig(name="cosine", warmup_epochs=0.5)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.3)
    s = build_scheduler(opt, cfg, 8, 3)
    for _ in range(5):
        opt.step()
        s.step()
    state = s.state_dict()
    opt2 = torch.optim.SGD([p], lr=0.3)
    s2 = build_scheduler(opt2, cfg, 8, 3)
    s2.load_state_dict(state)
    opt2.param_groups[0]["lr"] = s.get_last_lr()[0]
    for _ in range(6):
        opt.step()
        s.step()
        opt2.step()
        s2.step()
        assert s.get_last_lr() == s2.get_last_lr()
    assert math.isfinite(s.get_last_lr()[0])


def test_build_optimizer_kinds_and_frozen_params_skipped():
    a = torch.nn.Parameter(torch.ones(2))
    b = torch.nn.Parameter(torch.ones(2), requires_grad=False)
    sgd = build_optimizer([a, b], OptimConfig(lr=0.1, nesterov=True), torch.device("cpu"))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"]
    assert len(sgd.param_groups[0]["params"]) == 1
    adam = build_optimizer([a], OptimConfig(name="adamw", lr=1e-3), torch.device("cpu"))
    assert isinstance(adam, torch.optim.AdamW)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer([b], OptimConfig(), torch.device("cpu"))
