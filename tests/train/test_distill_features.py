"""The distill task with the multi-stage feature losses (issue 22): stage selection on both
models, pre-activation outputs, trained connectors that belong to the task (optimizer,
checkpoint, bit-exact resume, never model.pt), and every new method in ``supkd train``."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from supkd.cli import main
from supkd.data import build_data, make_loader
from supkd.errors import ConfigError
from supkd.train import build_task, run
from supkd.train.checkpoint import load_checkpoint
from supkd.train.loop import TrainingInterrupted

# name -> the extra overrides its published setting needs on digits.
METHODS = {
    "fitnet": ["task.alpha=100"],
    "at": ["task.alpha=1000"],
    "nst": ["task.alpha=50"],
    "pkt": ["task.alpha=30000", "task.representation=embedding"],
    "kdsvd": [],
    "vid": [],
    "ofd": ["task.alpha=0.001"],
    "reviewkd": ["task.alpha_warmup_epochs=1"],
    "cc": ["task.alpha=0.02", "task.representation=embedding"],
    "skd": ["task.ce_weight=0"],
}


def _task(cfg):
    bundle = build_data(cfg.data, seed=0)
    return build_task(cfg, bundle, "cpu"), bundle


def _batch(bundle):
    loader = make_loader(bundle, "train", 16, train=True, device="cpu", seed=0, num_workers=0)
    return next(iter(loader))


@pytest.mark.slow
@pytest.mark.parametrize("teacher", ["ce", "linear"])
@pytest.mark.parametrize("loss", list(METHODS))
def test_every_feature_method_trains_in_supkd_train(tiny, teacher_runs, tmp_path, capsys, loss,
                                                    teacher):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(tiny("name=cli_feat").to_dict()))
    out = tmp_path / "out"
    args = ["train", str(cfg), "task.name=distill", f"task.teacher={teacher_runs[teacher]}",
            f"task.loss={loss}", *METHODS[loss], "train.steps_per_epoch=2", "--out", str(out),
            "--quiet"]
    assert main(args) == 0, capsys.readouterr().err
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "completed" and result["steps"] == 2
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["train_kd"] > 0
    model = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    assert not any(k.startswith(("criterion", "regressors", "connectors", "abfs")) for k in model)


def test_fitnet_reads_the_hint_stage_through_a_trained_regressor(tiny, teacher_runs):
    cfg = tiny("task.name=distill", f"task.teacher={teacher_runs['ce']}", "task.loss=fitnet")
    task, bundle = _task(cfg)
    assert task.stage_names == (["layer2"], ["layer2"]) and task.adapter is None
    reg = task.criterion.regressors[0][0]
    # 8x8 digits: layer2 is 4x4 on both; width-4 student 8 channels, width-8 teacher 16.
    assert (reg.in_channels, reg.out_channels, reg.kernel_size) == (8, 16, (1, 1))
    trainable = {id(p) for p in task.trainable_parameters()}
    assert {id(p) for p in task.criterion.parameters()} <= trainable
    batch = _batch(bundle)
    task.eval()
    out = task(batch)
    s = task.model.forward_intermediates(batch.x)["layer2"]
    t = task.teacher.forward_intermediates(batch.x)["layer2"]
    assert out["kd"].item() == pytest.approx(task.criterion([s], [t]).item(), rel=1e-6)
    state = task.extra_state()
    assert state["stages"] == {"student": ["layer2"], "teacher": ["layer2"]}
    assert "regressors.0.0.weight" in state["loss"]


def test_ofd_reads_pre_relu_stages_and_the_teachers_batchnorm(tiny, teacher_runs):
    cfg = tiny("task.name=distill", f"task.teacher={teacher_runs['ce']}", "task.loss=ofd")
    task, bundle = _task(cfg)
    names = ["layer1", "layer2", "layer3", "layer4"]
    assert task.stage_names == (names, names)
    bn = task.teacher.bn_before_relu()["layer3"]
    from supkd.losses.ofd import ofd_margin

    expected = [ofd_margin(float(g), float(b)) for g, b in zip(bn.weight, bn.bias, strict=True)]
    assert task.criterion.margin2.flatten().tolist() == pytest.approx(expected, rel=1e-6)
    batch = _batch(bundle)
    task.eval()
    s = task.model.forward_intermediates(batch.x, preact=True)
    t = task.teacher.forward_intermediates(batch.x, preact=True)
    assert (t["layer4"] < 0).any()  # really before the ReLU
    value = task.criterion([s[n] for n in names], [t[n] for n in names])
    assert task(batch)["kd"].item() == pytest.approx(value.item(), rel=1e-6)


def test_reviewkd_reads_post_relu_student_and_pre_relu_teacher(tiny, teacher_runs):
    cfg = tiny("task.name=distill", f"task.teacher={teacher_runs['ce']}", "task.loss=reviewkd",
               "task.loss_args={stages: [layer3, layer4, embedding]}")
    task, bundle = _task(cfg)
    assert task.stage_names[0] == ["layer3", "layer4", "embedding"]
    assert [a.conv2[0].out_channels for a in task.criterion.abfs] == [32, 64, 64]
    batch = _batch(bundle)
    task.eval()
    s = task.model.forward_intermediates(batch.x)
    t = task.teacher.forward_intermediates(batch.x, preact=True)
    names = ["layer3", "layer4", "embedding"]
    value = task.criterion([s[n] for n in names], [t[n] for n in names])
    assert task(batch)["kd"].item() == pytest.approx(value.item(), rel=1e-6)
    # mdistiller's ImageNet setting: the student before its ReLUs too.
    pre, _ = _task(tiny("task.name=distill", f"task.teacher={teacher_runs['ce']}",
                        "task.loss=reviewkd", "task.loss_args={student_preact: true}"))
    pre.eval()
    s_pre = pre.model.forward_intermediates(batch.x, preact=True)
    names = pre.stage_names[0]
    value = pre.criterion([s_pre[n] for n in names], [t[n] for n in names])
    assert pre(batch)["kd"].item() == pytest.approx(value.item(), rel=1e-6)


def test_stage_loss_config_errors_name_the_field(tiny, teacher_runs):
    base = ["task.name=distill", f"task.teacher={teacher_runs['ce']}"]
    with pytest.raises(ConfigError, match=r"task\.loss_args\.stages.*no stage 'layer9'"):
        _task(tiny(*base, "task.loss=at", "task.loss_args={stages: [layer9]}"))
    with pytest.raises(ConfigError, match=r"differ in number; pair them"):
        _task(tiny(*base, "task.loss=at", "task.loss_args={stages: {student: [1, 2], "
                   "teacher: [layer3]}}"))
    with pytest.raises(ConfigError, match=r"task\.representation.*leave representation"):
        _task(tiny(*base, "task.loss=at", "task.representation=embedding"))
    with pytest.raises(ConfigError, match=r"task\.teacher_cache"):
        _task(tiny(*base, "task.loss=at", "task.teacher_cache=on"))


def test_stages_per_side_pair_other_stages(tiny, teacher_runs):
    cfg = tiny("task.name=distill", f"task.teacher={teacher_runs['ce']}", "task.loss=at",
               "task.loss_args={stages: {student: [layer3, layer4], teacher: [2, 3]}}")
    task, bundle = _task(cfg)
    assert task.stage_names == (["layer3", "layer4"], ["layer2", "layer3"])
    batch = _batch(bundle)
    task.eval()
    s = task.model.forward_intermediates(batch.x)
    t = task.teacher.forward_intermediates(batch.x)
    value = task.criterion([s["layer3"], s["layer4"]], [t["layer2"], t["layer3"]])
    assert task(batch)["kd"].item() == pytest.approx(value.item(), rel=1e-6)


def _stop_at(step: int):
    def cb(state):
        if state.step == step:
            state.stop = True

    return cb


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["ofd", "reviewkd", "vid"])
def test_connectors_resume_bit_exactly(tiny, teacher_runs, tmp_path, loss):
    cfg = tiny("task.name=distill", f"task.teacher={teacher_runs['ce']}", f"task.loss={loss}",
               "train.epochs=2", "deterministic=true")
    straight = run(cfg, tmp_path / "straight", quiet=True)
    assert straight["status"] == "completed" and straight["steps"] == 6
    d = tmp_path / "resumed"
    with pytest.raises(TrainingInterrupted):
        run(cfg, d, quiet=True, callbacks=[_stop_at(2)])
    ck = load_checkpoint(d / "checkpoints" / "last.pt")
    assert ck["task_state"]["loss"], "the connectors are in the checkpoint"
    resumed = run(cfg, d, resume=True, quiet=True)
    assert resumed["status"] == "completed" and resumed["steps"] == 6
    a = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(d / "model.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    la = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")["task_state"]["loss"]
    lb = load_checkpoint(d / "checkpoints" / "last.pt")["task_state"]["loss"]
    assert la.keys() == lb.keys()
    for k in la:
        assert torch.equal(la[k], lb[k]), k
    assert straight["test_acc"] == resumed["test_acc"]
