"""Every zoo model in every task on the embedded digits (one channel): CE, SupCon + linear,
distill as student and as teacher, layer-wise CKA. One optimizer step each through the
engine (``supkd.train.run``), so what is checked is what a grid runs.

Images are 16x16 and batches 16: the mobile networks (MobileNetV1/V2, ShuffleV1/V2) reach
1x1 maps after their second stage at 8x8, where BatchNorm over 4 samples gives gradients of
1e3-1e5 (measured at batch 4: MobileNetV2 1.7e5 at 8x8, 20 at 32x32), and one step of SGD
leaves a network whose eval-mode logits overflow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from supkd.analysis.layerwise import layerwise_cka
from supkd.models import load_model
from supkd.models.zoo import zoo_names
from supkd.train import run

FAST = ["resnet8", "wrn_16_1", "vgg8", "MobileNetV2", "ShuffleV1", "MobileNetV1"]


def _params(name: str) -> list:
    return [pytest.param(n) if n in FAST else pytest.param(n, marks=pytest.mark.slow)
            for n in zoo_names()]


def _cfg(name: str, model: str, task: dict, **model_extra) -> dict:
    return {
        "name": name, "device": "cpu", "seed": 0,
        "data": {"name": "digits", "image_size": 16, "subset": 32, "val_fraction": 0.0,
                 "num_workers": 0, "gpu_resident": "off"},
        "model": {"name": model, **model_extra},
        "optim": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4},
        "schedule": {"name": "step", "milestones": [150]},
        "train": {"epochs": 1, "batch_size": 16, "eval_batch_size": 64, "steps_per_epoch": 1,
                  "progress": False},
        "task": task,
    }


def _trained(folder: Path, cfg: dict) -> dict:
    res = run(cfg, folder, quiet=True)
    assert res["status"] == "completed", res.get("error")
    assert res["steps"] == 1
    lines = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    assert torch.isfinite(torch.tensor(lines[-1]["train_loss"]))
    return res


@pytest.fixture(scope="module")
def small_teacher(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("zoo") / "resnet8_teacher"
    _trained(folder, _cfg("t", "resnet8", {"name": "ce"}))
    return folder


@pytest.mark.parametrize("name", _params("zoo"))
def test_every_task_trains_one_step(name, tmp_path, small_teacher):
    ce = tmp_path / "ce"
    res = _trained(ce, _cfg("ce", name, {"name": "ce"}))
    assert 0.0 <= res["test_acc"] <= 100.0
    net = load_model(ce)
    assert net.spec["name"] == name and net.spec["in_channels"] == 1

    sup = tmp_path / "supcon"
    _trained(sup, _cfg("sup", name, {"name": "supcon", "temperature": 0.5}, projection_dim=16))
    _trained(tmp_path / "linear", _cfg("lin", name, {"name": "linear", "encoder": str(sup)}))

    # as a student (of a small teacher), on logits and on the embedding (CRD needs an index)
    _trained(tmp_path / "kd_student", _cfg("kds", name, {
        "name": "distill", "teacher": str(small_teacher), "loss": "hinton_kl",
        "loss_args": {"temperature": 4}, "ce_weight": 0.1, "alpha": 0.9}))
    _trained(tmp_path / "crd_student", _cfg("crds", name, {
        "name": "distill", "teacher": str(small_teacher), "loss": "crd",
        "loss_args": {"feat_dim": 8, "num_negatives": 8}, "representation": "embedding",
        "alpha": 0.8}))
    # as a teacher (of resnet8), with DKD
    _trained(tmp_path / "dkd_teacher", _cfg("dkdt", "resnet8", {
        "name": "distill", "teacher": str(ce), "loss": "dkd", "alpha_warmup_epochs": 1}))

    # layer-wise CKA of the model against the small teacher's stages
    student = load_model(ce).eval()
    teacher = load_model(small_teacher).eval()
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, 1, 16, 16, generator=gen), torch.zeros(8, dtype=torch.long))
               for _ in range(2)]
    cka = layerwise_cka(teacher, student, batches)
    stages = [k for k in student.forward_intermediates(batches[0][0])]
    assert tuple(cka.matrix.shape) == (6, len(stages))  # resnet8: stem, layer1-3, emb, logits
    assert torch.isfinite(torch.as_tensor(cka.matrix)).all()
    itself = layerwise_cka(student, student, batches)
    assert list(itself.diagonal) == stages
    assert all(abs(v - 1.0) < 1e-9 for v in itself.diagonal.values())
