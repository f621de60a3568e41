"""The teacher cache notices a teacher re-imported with another input normalization.

``supkd import-teacher --force`` replaces ``model.pt`` but keeps ``teacher_cache/``; the
weights are the same, only ``spec["input_affine"]`` (non-persistent buffers, not in the
state dict) changes. The cache key must change with it, or distillation would silently read
the logits of the teacher as it was before the correction.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch

from supkd.cli import main
from supkd.models import create_model
from supkd.train import teacher_cache as tc
from supkd.train.checkpoint import load_model, save_model

MEAN = (0.4914, 0.4822, 0.4465)  # supkd's cifar10 statistics: the data the KD run uses
STD = (0.2470, 0.2435, 0.2616)


class _Images(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], 0


def _bundle() -> SimpleNamespace:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8, generator=g)
    return SimpleNamespace(train=_Images(images), mean=MEAN, std=STD, pad=4, style="small")


def _cache(teacher_dir: Path, bundle) -> tc.TeacherCache:
    cache = tc.get_teacher_cache(
        load_model(teacher_dir),
        bundle,
        teacher_dir=teacher_dir,
        device="cpu",
        augment="standard",
        representation="logits",
        mode="on",
        progress=False,
    )
    assert cache is not None
    return cache


def _live(teacher_dir: Path, bundle, index: torch.Tensor, aug: torch.Tensor) -> torch.Tensor:
    teacher = load_model(teacher_dir)
    views = tc.render_views(bundle.train.images[index], aug, 4).float() / 255
    x = (views - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return teacher(x).logits


def _import(source: Path, out: Path, *flags: str) -> None:
    assert main(["import-teacher", str(source), "--out", str(out), "--force", *flags]) == 0


def test_reimport_with_other_normalization_gives_a_new_table(tmp_path, capsys):
    torch.manual_seed(0)
    net = create_model("resnet18", width=4, num_classes=5)
    for m in net.modules():  # non-trivial statistics, so the input scale shows in the logits
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 1.5)
    save_model(tmp_path / "src" / "model.pt", net, {"task": "ce"})
    teacher, bundle = tmp_path / "teacher", _bundle()
    index = torch.tensor([0, 1, 2, 1])
    aug = torch.tensor([[4, 4, 0], [0, 8, 1], [3, 5, 1], [8, 0, 0]])

    _import(tmp_path / "src" / "model.pt", teacher, "--input-norm", "none")
    first = _cache(teacher, bundle)
    assert first.built
    torch.testing.assert_close(
        first.lookup(index, aug), _live(teacher, bundle, index, aug), rtol=2e-2, atol=2e-2
    )

    # same weights, now corrected from SupContrast's CIFAR-10 statistics to supkd's
    _import(
        tmp_path / "src" / "model.pt",
        teacher,
        "--input-norm",
        "supcontrast-cifar10",
        "--data",
        "cifar10",
    )
    assert "input_affine" in load_model(teacher).spec
    second = _cache(teacher, bundle)
    assert second.built, "the table of the uncorrected teacher was reused"
    assert second.key != first.key and second.path != first.path
    live = _live(teacher, bundle, index, aug)
    torch.testing.assert_close(second.lookup(index, aug), live, rtol=2e-2, atol=2e-2)
    assert (first.lookup(index, aug) - live).abs().max() > 0.1  # the old table is now wrong

    # and the corrected teacher's table is found again, not rebuilt
    again = _cache(teacher, bundle)
    assert not again.built and again.key == second.key
    capsys.readouterr()
