"""Every task with timm students and teachers: a CNN (resnet10t), a ConvNeXt (convnext_atto)
and a ViT (vit_tiny_patch16_224) on digits at 32 pixels (``data.image_size=32``: the 16-pixel
digits resized per batch), each trained with ``ce`` and ``supcon``, its SupCon encoder given a
``linear`` classifier, then distilled into (student) and out of (teacher) another family."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from supkd.models import load_model, load_model_record
from supkd.train import run
from supkd.train.checks import load_run_config

FAMILIES = ("cnn", "convnext", "vit")
#: student family -> teacher family of its distill run (each family is student once and
#: teacher once).
TEACHER_OF = {"cnn": "vit", "convnext": "cnn", "vit": "convnext"}
BASE = [
    "data.name=digits", "data.image_size=32", "data.subset=32", "data.val_fraction=0",
    "data.num_workers=0", "train.batch_size=16", "train.eval_batch_size=64", "train.epochs=1",
    "train.steps_per_epoch=2", "train.progress=false", "optim.lr=0.01",
]


def _model(timm_tiny, family: str) -> list[str]:
    name, args = timm_tiny[family]
    return [f"model.name={name}", f"model.timm_args={json.dumps(args)}"]


def _run(root: Path, name: str, *overrides: str) -> Path:
    res = run(load_run_config({"name": name}, [*BASE, *overrides]), root / name, quiet=True)
    assert res["status"] == "completed", res
    return root / name


@pytest.fixture(scope="module")
def timm_runs(tmp_path_factory, timm_tiny) -> dict[str, dict[str, Path]]:
    """ce, supcon and linear runs of every family (built once)."""
    root = tmp_path_factory.mktemp("timm_runs")
    out: dict[str, dict[str, Path]] = {}
    for family in FAMILIES:
        m = _model(timm_tiny, family)
        ce = _run(root, f"{family}_ce", *m)
        sc = _run(root, f"{family}_supcon", *m, "task.name=supcon", "task.projection_dim=16")
        lin = _run(root, f"{family}_linear", *m, "task.name=linear", f"task.encoder={sc}")
        out[family] = {"ce": ce, "supcon": sc, "linear": lin}
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_ce_supcon_and_linear_runs_hold_the_timm_model(timm_runs, timm_tiny, family):
    name, args = timm_tiny[family]
    runs = timm_runs[family]
    ce = load_model(runs["ce"])
    assert ce.spec["name"] == name and ce.spec["timm_args"] == args
    assert ce.head is None and ce.spec["in_channels"] == 1
    sc = load_model_record(runs["supcon"])
    assert sc.model.head is not None and sc.model.head.projection_dim == 16
    assert sc.trained_parts == {"encoder", "head"}
    lin = load_model_record(runs["linear"])
    assert lin.trained_parts == {"encoder", "head", "classifier"}
    # The linear stage froze the SupCon encoder: its weights are the SupCon run's.
    for key, value in sc.model.state_dict().items():
        if key.startswith("encoder."):
            assert torch.equal(lin.model.state_dict()[key], value), key
    assert not torch.equal(lin.model.classifier.weight, sc.model.classifier.weight)
    result = json.loads((runs["ce"] / "result.json").read_text())
    assert result["versions"]["timm"] == __import__("timm").__version__


@pytest.mark.parametrize("student", FAMILIES)
def test_distill_timm_student_from_timm_teacher(timm_runs, timm_tiny, tmp_path, student):
    teacher = timm_runs[TEACHER_OF[student]]["linear"]
    out = _run(tmp_path, "kd", *_model(timm_tiny, student), "task.name=distill",
               f"task.teacher={teacher}", "task.loss=supcon_kd")
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert math.isfinite(lines[-1]["train_kd"]) and lines[-1]["train_kd"] > 0
    rec = load_model_record(out)
    assert rec.model.spec["name"] == timm_tiny[student][0]
    assert rec.info["teacher"] == str(teacher)


def test_distill_on_embeddings_adapts_widths(timm_runs, timm_tiny, tmp_path):
    # ViT embedding (32) -> ConvNeXt teacher's embedding (64): the task's adapter maps them.
    out = _run(tmp_path, "kd_emb", *_model(timm_tiny, "vit"), "task.name=distill",
               f"task.teacher={timm_runs['convnext']['linear']}", "task.loss=norm_mse",
               "task.representation=embedding")
    ck = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert ck["task_state"]["widths"] == [32, 64]
