"""End to end through ``supkd train``: CE teacher, SupCon teacher + linear stage, then a
student with each of the six KD losses from the SupCon teacher (and logit MSE from the CE
teacher), on a subset of the real CIFAR-10 pack and on the embedded digits. Each run must
leave a complete run directory. Bad teachers end with exit 2 and one line."""

from __future__ import annotations

import json

import pytest

from supkd.cli import main
from supkd.losses import LOSSES
from supkd.models import create_model
from supkd.train import load_model_record
from supkd.train.checkpoint import save_model

pytestmark = pytest.mark.slow

COMMON = [
    "model.width=4",
    "train.epochs=1",
    "train.steps_per_epoch=2",
    "train.batch_size=16",
    "train.eval_batch_size=256",
    "train.progress=false",
    "data.val_fraction=0.0",
    "data.num_workers=0",
]


def _data_overrides(request, name: str) -> list[str]:
    if name == "digits":
        return ["data.name=digits", "data.image_size=8", "data.subset=64"]
    root = request.getfixturevalue("cifar10_jpeg_dir")
    return ["data.name=cifar10-jpeg", f"data.root={root}", "data.subset=64",
            "data.image_size=16"]


def _train(tmp, name, *overrides) -> dict:
    out = tmp / name
    cfg = tmp / "empty.yaml"
    cfg.write_text("{}\n")
    code = main(["train", str(cfg), f"name={name}", *COMMON, *overrides,
                 "--out", str(out), "--quiet"])
    assert code == 0, name
    for f in ("config.yaml", "metrics.jsonl", "result.json", "model.pt", "checkpoints/last.pt"):
        assert (out / f).is_file(), (name, f)
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "completed" and result["steps"] == 2 and result["name"] == name
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    return result


@pytest.fixture(scope="module", params=["digits", "cifar10-jpeg"])
def pipeline(request, tmp_path_factory):
    data = _data_overrides(request, request.param)
    tmp = tmp_path_factory.mktemp(f"pipeline-{request.param}")
    _train(tmp, "ce_teacher", *data, "model.width=8")
    sup = _train(tmp, "supcon_teacher", *data, "model.width=8", "task.name=supcon")
    assert sup["test_acc"] is None  # no trained classifier yet: the linear stage reports it
    lin = _train(tmp, "supcon_linear", *data, "task.name=linear",
                 f"task.encoder={tmp / 'supcon_teacher'}")
    assert 0.0 <= lin["test_acc"] <= 100.0
    return tmp, data


@pytest.mark.parametrize("loss", list(LOSSES))
def test_kd_student_from_supcon_teacher(pipeline, loss):
    tmp, data = pipeline
    res = _train(tmp, f"kd_{loss}", *data, "task.name=distill",
                 f"task.teacher={tmp / 'supcon_linear'}", f"task.loss={loss}")
    assert 0.0 <= res["test_acc"] <= 100.0
    rec = load_model_record(tmp / f"kd_{loss}")
    assert rec.info["task"] == "distill" and rec.model.spec["width"] == 4


def test_kd_baseline_from_ce_teacher_and_bad_teachers(pipeline, tmp_path, capsys):
    tmp, data = pipeline
    _train(tmp, "kd_ce_logit_mse", *data, "task.name=distill",
           f"task.teacher={tmp / 'ce_teacher'}", "task.loss=logit_mse")
    in_ch = load_model_record(tmp / "ce_teacher").model.spec["in_channels"]
    five = create_model("resnet18", num_classes=5, width=4, in_channels=in_ch)
    save_model(tmp_path / "five" / "model.pt", five, {"task": "ce"})
    cfg = tmp_path / "empty.yaml"
    cfg.write_text("{}\n")
    cases = [
        (f"task.teacher={tmp_path / 'five'}", "has 5 classes"),
        (f"task.teacher={tmp / 'ce_teacher'}", "has no projection head"),
        (f"task.teacher={tmp_path / 'missing'}", "not found"),
    ]
    for i, (teacher, expected) in enumerate(cases):
        capsys.readouterr()
        code = main(["train", str(cfg), *COMMON, *data, "task.name=distill", teacher,
                     "task.representation=projection" if "projection" in expected else
                     "task.representation=logits", "--out", str(tmp_path / f"bad{i}")])
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1 and expected in err, err
