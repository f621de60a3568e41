"""A toy task and its data for engine tests: a linear classifier on 4 features, 3 classes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from supkd.train.tasks import Task


class ToyTask(Task):
    """CE of ``nn.Linear(4, 3)`` (seeded: the same weights every time); the loss is
    multiplied by NaN at call ``nan_at`` (1-based) to make a run diverge there. Its ``name``
    is not registered: tests build it directly."""

    name = "toy"

    def __init__(self, nan_at: int | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = nn.Linear(4, 3)
        self.nan_at = nan_at
        self.calls = 0

    def training_step(self, batch):
        self.calls += 1
        loss = F.cross_entropy(self.model(batch.x), batch.y)
        if self.calls == self.nan_at:
            loss = loss * float("nan")
        return {"loss": loss, "ce": loss.detach()}

    @classmethod
    def build(cls, cfg, bundle, device):
        return cls()


def toy_data(n: int = 32, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random feature rows (n, 4) and labels (n,) in 0..2, from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


def toy_loader(n: int = 32, batch: int = 8, seed: int = 1) -> DataLoader:
    """:func:`toy_data` in batches of ``batch``, in order."""
    return DataLoader(TensorDataset(*toy_data(n, seed)), batch_size=batch)
