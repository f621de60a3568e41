"""The CUDA fast path (skipped without a GPU): bf16 autocast, channels_last, fused optimizer,
deferred divergence check, torch.compile, and a KD run with the teacher cache."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from supkd.config import OptimConfig, TrainConfig
from supkd.models import create_model
from supkd.train import fit, run
from supkd.train.optim import build_optimizer
from supkd.train.tasks import CETask

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


class RecordingCE(CETask):
    """CE task that records what the step sees, and can return NaN at one call."""

    def __init__(self, model, nan_at=None):
        super().__init__(model)
        self.seen = []
        self.nan_at = nan_at
        self.calls = 0

    def training_step(self, batch):
        self.calls += 1
        logits = self.model(batch.x).logits
        self.seen.append(
            (logits.dtype, batch.x.is_contiguous(memory_format=torch.channels_last))
        )
        loss = F.cross_entropy(logits, batch.y)
        if self.calls == self.nan_at:
            loss = loss * float("nan")
        return {"loss": loss}


def _loader(n=256, batch=64, size=16):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, size, size, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch)


def test_defaults_on_cuda_bf16_channels_last_fused():
    task = RecordingCE(create_model("resnet18", num_classes=10, width=8))
    res = fit(task, _loader(), train=TrainConfig(epochs=1, progress=False), device="cuda",
              test_loader=_loader(n=128), quiet=True)
    assert res["status"] == "completed"
    assert task.seen[0] == (torch.bfloat16, True)
    opt = build_optimizer(task.model.parameters(), OptimConfig(), torch.device("cuda"))
    assert opt.defaults["fused"] is True


def test_deferred_divergence_check_records_the_first_bad_step():
    task = RecordingCE(create_model("resnet18", num_classes=10, width=8), nan_at=3)
    res = fit(task, _loader(), train=TrainConfig(epochs=3, log_every=5, progress=False),
              device="cuda", quiet=True)
    assert res["status"] == "diverged" and res["diverged_step"] == 3
    assert res["steps"] == 4  # 4 steps per epoch: stopped at the epoch-end check


def test_compile_on():
    task = RecordingCE(create_model("resnet18", num_classes=10, width=8))
    res = fit(task, _loader(), train=TrainConfig(epochs=2, compile="on", progress=False),
              device="cuda", test_loader=_loader(n=128), quiet=True)
    assert res["status"] == "completed" and res["test_acc"] is not None


def test_kd_run_on_cuda_with_teacher_cache(tmp_path):
    base = ["data.name=digits", "data.image_size=16", "model.width=8", "train.epochs=1",
            "train.batch_size=128", "train.progress=false", "device=cuda"]
    from supkd.train.checks import load_run_config

    t = run(load_run_config({"name": "t"}, base), tmp_path / "teacher", quiet=True)
    assert t["status"] == "completed"
    s = run(load_run_config({"name": "s"}, [*base, "task.name=distill",
                                        f"task.teacher={tmp_path / 'teacher'}",
                                        "task.loss=hinton_kl", "model.width=4"]),
            tmp_path / "student", quiet=True)
    assert s["status"] == "completed", s
    assert (tmp_path / "teacher" / "teacher_cache").is_dir()

