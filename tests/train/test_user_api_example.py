"""The README's "your own models" example, run as written (kept in sync by hand).

It distills a torchvision ResNet-18 teacher into a ResNet-10 student built from torchvision's
``ResNet`` class with
``supcon_kd`` on scikit-learn's digits, with plain DataLoaders.
"""

from __future__ import annotations

import math

import pytest
import torch


@pytest.mark.slow
def test_readme_user_api_example(tmp_path):
    # --- README example (begin) ---------------------------------------------------------
    import torch
    import torchvision
    from sklearn.datasets import load_digits
    from torch.utils.data import DataLoader, TensorDataset
    from torchvision.models.resnet import BasicBlock, ResNet

    from supkd.train import distill, train_classifier

    digits = load_digits()  # 1,797 8x8 images, 10 classes, bundled with scikit-learn
    x = torch.tensor(digits.images, dtype=torch.float32).div(16).unsqueeze(1).repeat(1, 3, 1, 1)
    y = torch.tensor(digits.target)
    train = DataLoader(TensorDataset(x[:256], y[:256]), batch_size=64, shuffle=True)
    test = DataLoader(TensorDataset(x[1500:], y[1500:]), batch_size=300)

    teacher = torchvision.models.resnet18(num_classes=10)  # or load your trained weights
    train_classifier(teacher, train, test_loader=test, epochs=1, lr=0.05, device="cpu")

    student = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10)  # a ResNet-10
    result = distill(
        student, teacher, train, test_loader=test,
        loss="supcon_kd", alpha=1.0, representation="logits",
        epochs=2, lr=0.05, device="cpu", out=tmp_path / "kd_run",
    )
    print(f"student test accuracy: {result['test_acc']:.1f}%")
    # --- README example (end) -----------------------------------------------------------

    assert result["status"] == "completed"
    assert result["epochs"] == 2 and result["steps"] == 2 * 4
    assert 0.0 <= result["test_acc"] <= 100.0 and math.isfinite(result["test_acc"])
    # The teacher stayed frozen; the run directory has metrics and a resumable checkpoint.
    assert all(not p.requires_grad for p in teacher.parameters())
    assert not teacher.training
    lines = (tmp_path / "kd_run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2
    assert (tmp_path / "kd_run" / "checkpoints" / "last.pt").is_file()


def test_distill_user_modules_teacher_gets_no_gradient_and_student_learns():
    """KD steps on user modules: the student's weights move, the teacher's do not."""
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from supkd.train import distill

    def small_cnn(width: int) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 4),
        )

    torch.manual_seed(0)
    x = torch.randn(16, 3, 8, 8)
    y = torch.arange(16) % 4
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    teacher, student = small_cnn(16), small_cnn(8)
    t_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    s_before = student[-1].weight.detach().clone()
    res = distill(
        student, teacher, loader, loss="gram", epochs=1, lr=0.1, device="cpu", quiet=True,
        representation="embedding",
    )
    assert res["status"] == "completed" and res["steps"] == 2
    assert res["adapter"] is None  # gram (sample mode) compares B x B Grams: no adapter
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, t_before[k]), k  # frozen, and eval mode keeps BN stats too
    assert not torch.equal(student[-1].weight, s_before)
