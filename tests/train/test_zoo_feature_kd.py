"""Issue 22's done-when, second half: every feature method trains in ``supkd train`` on
digits as the student of a zoo teacher, into a zoo student, through the engine (one
optimizer step, 16x16 digits as tests/models/test_zoo_tasks.py). Pairs whose channels and
depths differ (resnet32x4 -> resnet8x4, wrn_40_2 -> wrn_16_2), one whose stage counts differ
(resnet32x4, three stages -> vgg8, four; per-side stages), and OFD refused for a ShuffleNet
teacher, which has no BatchNorm before its stages' ReLUs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from supkd.errors import ConfigError
from supkd.train import run

# name -> (task settings beyond the loss, as configs/cifar100/_students.yaml sets them)
METHODS = {
    "fitnet": {"alpha": 100.0},
    "at": {"alpha": 1000.0},
    "nst": {"alpha": 50.0},
    "pkt": {"alpha": 30000.0, "representation": "embedding"},
    "kdsvd": {},
    "vid": {},
    "ofd": {"alpha": 0.001},
    "reviewkd": {"alpha": 5.0, "alpha_warmup_epochs": 1},
    "cc": {"alpha": 0.02, "representation": "embedding"},
    "skd": {"ce_weight": 0.0},
}
PAIRS = [("resnet32x4", "resnet8x4"), ("wrn_40_2", "wrn_16_2")]


def _cfg(name: str, model: str, task: dict) -> dict:
    return {
        "name": name, "device": "cpu", "seed": 0,
        "data": {"name": "digits", "image_size": 16, "subset": 32, "val_fraction": 0.0,
                 "num_workers": 0, "gpu_resident": "off"},
        "model": {"name": model},
        "optim": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4},
        "schedule": {"name": "step", "milestones": [150]},
        "train": {"epochs": 1, "batch_size": 16, "eval_batch_size": 64, "steps_per_epoch": 1,
                  "progress": False},
        "task": task,
    }


class _Teachers(dict):
    """arch -> run folder of one CE step of that zoo teacher, trained on first use."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def __missing__(self, arch: str) -> Path:
        res = run(_cfg(arch, arch, {"name": "ce"}), self.root / arch, quiet=True)
        assert res["status"] == "completed", res.get("error")
        self[arch] = self.root / arch
        return self[arch]


@pytest.fixture(scope="module")
def zoo_teachers(tmp_path_factory) -> dict[str, Path]:
    return _Teachers(tmp_path_factory.mktemp("zoo_teachers"))


def _distilled(folder: Path, teacher: Path, student: str, loss: str, **task) -> dict:
    res = run(_cfg("kd", student, {"name": "distill", "teacher": str(teacher), "loss": loss,
                                   **task}), folder, quiet=True)
    assert res["status"] == "completed", res.get("error")
    assert res["steps"] == 1
    lines = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    assert torch.isfinite(torch.tensor(lines[-1]["train_loss"]))
    assert lines[-1]["train_kd"] > 0
    # the student alone in model.pt: no connector, fusion module or variance
    state = torch.load(folder / "model.pt", weights_only=True)["state_dict"]
    assert not any(k.startswith(("criterion", "regressors", "connectors", "abfs", "alphas"))
                   for k in state), sorted(state)[:5]
    return res


@pytest.mark.slow
@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: "-".join(p))
@pytest.mark.parametrize("loss", list(METHODS))
def test_every_feature_method_distils_a_zoo_teacher(loss, pair, zoo_teachers, tmp_path):
    teacher, student = pair
    _distilled(tmp_path / "kd", zoo_teachers[teacher], student, loss, **METHODS[loss])


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["fitnet", "at", "vid", "ofd", "kdsvd", "reviewkd"])
def test_different_stage_counts_pair_through_per_side_stages(loss, zoo_teachers, tmp_path):
    """resnet32x4 (stem, layer1..3) -> vgg8 (stem, layer1..4), paired per side. At 16x16
    resnet32x4's layer1..3 are 16, 8, 4 pixels wide, vgg8's layer2..4 4, 2, 2: the student's
    three deepest stages against the teacher's three, at a quarter or half the teacher's
    resolution (each loss resizes or pools as it does for any pair). KDSVD needs equal map
    widths (vgg8 layer1, layer2: 8, 4 against the teacher's layer2, layer3)."""
    stages = {"student": ["layer2", "layer3", "layer4"], "teacher": ["layer1", "layer2", "layer3"]}
    if loss == "kdsvd":
        stages = {"student": ["layer1", "layer2"], "teacher": ["layer2", "layer3"]}
    if loss == "fitnet":  # one hint stage
        stages = {"student": ["layer2"], "teacher": ["layer2"]}
    extra = {k: v for k, v in METHODS[loss].items() if k != "alpha_warmup_epochs"}
    if loss == "reviewkd":
        stages = {"student": [*stages["student"], "embedding"],
                  "teacher": [*stages["teacher"], "embedding"]}
    _distilled(tmp_path / "kd", zoo_teachers["resnet32x4"], "vgg8", loss,
               loss_args={"stages": stages}, **extra)


def test_unequal_stage_counts_without_per_side_stages_is_one_config_error(zoo_teachers):
    from supkd.data import build_data
    from supkd.train import build_task
    from supkd.train.checks import load_run_config

    cfg = load_run_config(_cfg("kd", "vgg8", {"name": "distill", "loss": "at",
                                             "teacher": str(zoo_teachers["resnet32x4"])}), [])
    with pytest.raises(ConfigError) as info:
        build_task(cfg, build_data(cfg.data, seed=0), "cpu")
    msg = str(info.value)
    assert msg.startswith("config field 'task.loss_args.stages'") and "\n" not in msg
    assert "layer1, layer2, layer3, layer4" in msg and "{student: [...], teacher: [...]}" in msg


def test_ofd_refuses_a_shufflenet_teacher_in_one_line(zoo_teachers):
    from supkd.data import build_data
    from supkd.train import build_task
    from supkd.train.checks import load_run_config

    cfg = load_run_config(_cfg("kd", "resnet8x4", {"name": "distill", "loss": "ofd",
                                                  "teacher": str(zoo_teachers["ShuffleV1"])}), [])
    with pytest.raises(ConfigError) as info:
        build_task(cfg, build_data(cfg.data, seed=0), "cpu")
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("config field 'task.teacher'")
    assert "'ShuffleV1'" in msg and "bn_before_relu" in msg
