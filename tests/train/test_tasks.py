"""Tasks: frozen teachers, the KD adapter's home, the linear stage, and bad teachers."""

from __future__ import annotations

import pytest
import torch

from supkd.data import build_data, make_loader
from supkd.errors import CheckpointError, ConfigError
from supkd.models import create_model
from supkd.train import build_task, load_model_record
from supkd.train.checkpoint import save_model


def _task(cfg):
    bundle = build_data(cfg.data, seed=0)
    return build_task(cfg, bundle, "cpu"), bundle


def _batch(bundle, views=1, augment="standard"):
    loader = make_loader(bundle, "train", 16, train=True, views=views, augment=augment,
                         device="cpu", seed=0, num_workers=0)
    return next(iter(loader))


def test_distill_adapter_belongs_to_the_task_and_teacher_is_frozen(tiny, teacher_runs):
    cfg = tiny("task.name=distill", f"task.teacher={teacher_runs['ce']}",
               "task.loss=logit_mse", "task.representation=embedding")
    task, bundle = _task(cfg)
    assert task.widths == (32, 64)  # width-4 student vs width-8 teacher embeddings
    assert isinstance(task.adapter, torch.nn.Linear) and task.adapter.weight.shape == (64, 32)
    assert not any(k.startswith("adapter") for k in task.model.state_dict())
    assert set(task.extra_state()["adapter"]) == {"weight", "bias"}
    task.train()
    assert not task.teacher.training and task.model.training
    out = task(_batch(bundle))
    assert set(out) == {"loss", "ce", "kd", "acc"}
    out["loss"].backward()
    assert all(p.grad is None for p in task.teacher.parameters())
    assert task.adapter.weight.grad is not None
    assert all(p.grad is not None for p in task.model.encoder.parameters())
    # Eq. 6 with the logged parts.
    assert torch.allclose(out["loss"].detach(), out["ce"] + 1.0 * out["kd"])


def test_gram_sample_mode_needs_no_adapter(tiny, teacher_runs):
    task, _ = _task(tiny("task.name=distill", f"task.teacher={teacher_runs['ce']}",
                         "task.loss=gram", "task.representation=embedding"))
    assert task.adapter is None


def test_linear_stage_trains_only_the_classifier_and_is_a_supcon_teacher(tiny, teacher_runs):
    sup = load_model_record(teacher_runs["supcon"])
    lin = load_model_record(teacher_runs["linear"])
    assert sup.info["task"] == "supcon" and "classifier" not in sup.trained_parts
    assert lin.trained_parts == {"encoder", "head", "classifier"}
    for k, v in sup.model.encoder.state_dict().items():
        assert torch.equal(v, lin.model.encoder.state_dict()[k]), k  # frozen encoder + BN
    for k, v in sup.model.head.state_dict().items():
        assert torch.equal(v, lin.model.head.state_dict()[k]), k
    task, _ = _task(tiny("task.name=linear", f"task.encoder={teacher_runs['supcon']}"))
    task.train()
    assert not task.model.encoder.training
    names = {n for n, p in task.model.named_parameters() if p.requires_grad}
    assert names == {"classifier.weight", "classifier.bias"}


@pytest.mark.parametrize("rep", ["logits", "embedding", "projection"])
def test_linear_run_serves_every_representation(tiny, teacher_runs, rep):
    task, bundle = _task(tiny("task.name=distill", f"task.teacher={teacher_runs['linear']}",
                              "task.loss=supcon_kd", f"task.representation={rep}"))
    assert torch.isfinite(task(_batch(bundle))["loss"])


def test_supcon_task_needs_two_views_and_leaves_the_classifier(tiny):
    task, bundle = _task(tiny("task.name=supcon"))
    assert (task.views, task.augment, task.has_classifier) == (2, "supcon", False)
    out = task(_batch(bundle, views=2, augment="supcon"))
    out["loss"].backward()
    assert task.model.classifier.weight.grad is None
    assert task.model.head.fc2.weight.grad is not None
    with pytest.raises(ValueError, match=r"\(B, 2, C, H, W\)"):
        task(_batch(bundle))


def test_bad_teachers(tiny, teacher_runs, tmp_path):
    def build(*ov):
        return _task(tiny("task.name=distill", *ov))

    with pytest.raises(CheckpointError, match=r"task\.teacher.*not found"):
        build(f"task.teacher={tmp_path / 'nope'}")
    with pytest.raises(ConfigError, match="has no projection head"):
        build(f"task.teacher={teacher_runs['ce']}", "task.representation=projection")
    with pytest.raises(ConfigError, match="linear stage"):
        build(f"task.teacher={teacher_runs['supcon']}", "task.representation=logits")
    five = create_model("resnet18", num_classes=5, width=4, in_channels=1)
    save_model(tmp_path / "five" / "model.pt", five, {"task": "ce"})
    with pytest.raises(ConfigError, match="has 5 classes, the data set 'digits' has 10"):
        build(f"task.teacher={tmp_path / 'five'}")
    rgb = create_model("resnet18", num_classes=10, width=4, in_channels=3)
    save_model(tmp_path / "rgb" / "model.pt", rgb, {"task": "ce"})
    with pytest.raises(ConfigError, match="3-channel images"):
        build(f"task.teacher={tmp_path / 'rgb'}")
    with pytest.raises(CheckpointError, match=r"task\.encoder"):
        _task(tiny("task.name=linear", f"task.encoder={tmp_path / 'nope'}"))
