"""The Python API on a user's own modules (``supkd.train.distill``).

The guide's "your own models" example itself is ``docs/examples/own_models.py``, which
``tests/docs/test_examples.py`` runs as written; this file checks what it relies on.
"""

from __future__ import annotations

import torch


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
