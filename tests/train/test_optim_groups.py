"""``optim.decay_norm_and_bias``: no weight decay on norm layers and biases ("no bias decay",
He et al. 2019): parameter groups, the update itself, the scheduler, checkpoint resume."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from supkd.config import OptimConfig, ScheduleConfig
from supkd.models import create_model
from supkd.train import TrainingInterrupted, run
from supkd.train.checkpoint import load_checkpoint
from supkd.train.checks import load_run_config
from supkd.train.optim import build_optimizer, build_scheduler, param_groups

CPU = torch.device("cpu")


def _model() -> nn.Module:
    torch.manual_seed(0)
    return create_model("resnet18", num_classes=10, width=4, projection_dim=8)


def test_default_is_one_decayed_group_in_parameter_order():
    model = _model()
    opt = build_optimizer(model.parameters(), OptimConfig(weight_decay=5e-4), CPU)
    assert OptimConfig().decay_norm_and_bias is True
    assert len(opt.param_groups) == 1
    assert opt.param_groups[0]["weight_decay"] == 5e-4
    assert [id(p) for p in opt.param_groups[0]["params"]] == [id(p) for p in model.parameters()]


def test_groups_partition_the_trainable_parameters_exactly():
    model = _model()
    model.classifier.weight.requires_grad_(False)  # frozen parameters stay out of both
    trainable = [p for p in model.parameters() if p.requires_grad]
    cfg = OptimConfig(weight_decay=1e-3, decay_norm_and_bias=False)
    opt = build_optimizer(model.parameters(), cfg, CPU)
    decay, no_decay = opt.param_groups
    ids = [id(p) for g in (decay, no_decay) for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(trainable)  # disjoint, nothing lost
    assert set(ids) == {id(p) for p in trainable}
    assert decay["weight_decay"] == 1e-3 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"])
    assert all(p.ndim <= 1 for p in no_decay["params"])
    # Every BatchNorm affine parameter and every bias is exempt; every conv/linear weight
    # is decayed (the classifier's frozen weight is in neither).
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    exempt = {id(m.weight) for m in norms} | {id(m.bias) for m in norms}
    exempt |= {id(m.bias) for m in model.modules() if getattr(m, "bias", None) is not None}
    assert {id(p) for p in no_decay["params"]} == exempt
    weights = {
        id(m.weight)
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.Linear) and m.weight.requires_grad
    }
    assert {id(p) for p in decay["params"]} == weights
    # Order inside each group follows the model's parameter order.
    order = {id(p): i for i, p in enumerate(trainable)}
    for g in (decay, no_decay):
        pos = [order[id(p)] for p in g["params"]]
        assert pos == sorted(pos)


def test_empty_group_is_left_out():
    bias_only = [nn.Parameter(torch.zeros(3)), nn.Parameter(torch.ones(2))]
    groups = param_groups(bias_only, OptimConfig(decay_norm_and_bias=False))
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.0


def _zero_grad_step(cfg: OptimConfig):
    """One optimizer step with zero gradients: only weight decay can move a parameter."""
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)  # not all ones, so a shrink is visible
    params = [*conv.parameters(), *bn.parameters()]
    for p in params:
        p.grad = torch.zeros_like(p)
    before = {"conv": conv.weight.detach().clone(), "bn": bn.weight.detach().clone()}
    build_optimizer(params, cfg, CPU).step()
    return before, {"conv": conv.weight.detach(), "bn": bn.weight.detach()}


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_no_decay_leaves_norm_weights_while_conv_weights_shrink(name):
    lr, wd, m = 0.1, 0.01, 0.9
    nesterov = name == "sgd"
    cfg = OptimConfig(name=name, lr=lr, momentum=m, nesterov=nesterov, weight_decay=wd,
                      decay_norm_and_bias=False)
    before, after = _zero_grad_step(cfg)
    assert torch.equal(after["bn"], before["bn"])
    # SGD, Nesterov, first step: buf = wd·w, update = (1 + m)·wd·w. AdamW: w ← w(1 − lr·wd)
    # and a zero Adam step.
    shrink = 1 - lr * wd * (1 + m) if name == "sgd" else 1 - lr * wd
    torch.testing.assert_close(after["conv"], before["conv"] * shrink, rtol=1e-6, atol=1e-7)
    assert not torch.equal(after["conv"], before["conv"])

    # Control: with decay on norms (the default) the same BN weight does shrink.
    cfg.decay_norm_and_bias = True
    before, after = _zero_grad_step(cfg)
    torch.testing.assert_close(after["bn"], before["bn"] * shrink, rtol=1e-6, atol=1e-7)


def test_scheduler_sets_every_group_to_the_same_lr():
    model = _model()
    cfg = OptimConfig(lr=0.4, decay_norm_and_bias=False)
    opt = build_optimizer(model.parameters(), cfg, CPU)
    sched = build_scheduler(opt, ScheduleConfig(name="onecycle"), steps_per_epoch=5, epochs=2)
    seen = []
    for _ in range(10):
        lrs = [g["lr"] for g in opt.param_groups]
        assert len(lrs) == 2 and lrs[0] == lrs[1]
        seen.append(lrs[0])
        opt.step()
        sched.step()
    assert len(set(seen)) > 5 and max(seen) <= 0.4  # it really is scheduled


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_two_groups_keep_the_fused_cuda_optimizer():
    model = _model().cuda()
    for name in ("sgd", "adamw"):
        cfg = OptimConfig(name=name, decay_norm_and_bias=False)
        opt = build_optimizer(model.parameters(), cfg, torch.device("cuda"))
        assert opt.defaults["fused"] is True and len(opt.param_groups) == 2
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        opt.step()


# ---------------------------------------------------------------------------------------
# Resume


def _stop_at(step: int):
    def cb(state):
        if state.step == step:
            state.stop = True

    return cb


@pytest.mark.slow
def test_resume_with_two_groups_is_bit_identical(tmp_path, tiny):
    cfg = tiny("optim.decay_norm_and_bias=false", "optim.nesterov=true", "train.epochs=2",
               "deterministic=true")
    straight = run(cfg, tmp_path / "straight", quiet=True)
    assert straight["status"] == "completed" and straight["steps"] == 6

    d = tmp_path / "resumed"
    with pytest.raises(TrainingInterrupted):
        run(cfg, d, quiet=True, callbacks=[_stop_at(2)])
    ck = load_checkpoint(d / "checkpoints" / "last.pt")
    groups = ck["optimizer"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [cfg.optim.weight_decay, 0.0]
    assert ck["optimizer"]["state"], "momentum buffers are in the checkpoint"
    resumed = run(cfg, d, resume=True, quiet=True)
    assert resumed["status"] == "completed" and resumed["steps"] == 6
    a = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(d / "model.pt", weights_only=True)["state_dict"]
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_refuses_a_changed_decay_setting(tmp_path, tiny):
    from supkd.errors import ConfigError

    cfg = tiny("train.epochs=2")
    with pytest.raises(TrainingInterrupted):
        run(cfg, tmp_path, quiet=True, callbacks=[_stop_at(2)])
    changed = load_run_config(cfg, ["optim.decay_norm_and_bias=false"])
    with pytest.raises(ConfigError, match=r"optim\.decay_norm_and_bias"):
        run(changed, tmp_path, resume=True, quiet=True)


def test_run_saved_before_the_new_fields_existed_still_resumes(tmp_path, tiny):
    """A config.yaml without ``optim.decay_norm_and_bias`` / ``train.compile_mode`` (a run
    started by an older supkd) reads them as their defaults, which keep the old behaviour."""
    import yaml

    cfg = tiny("train.epochs=2")
    with pytest.raises(TrainingInterrupted):
        run(cfg, tmp_path, quiet=True, callbacks=[_stop_at(2)])
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    del saved["optim"]["decay_norm_and_bias"]
    del saved["train"]["compile_mode"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    res = run(cfg, tmp_path, resume=True, quiet=True)
    assert res["status"] == "completed" and res["steps"] == 6
