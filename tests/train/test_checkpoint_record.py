"""The typed checkpoint (:class:`supkd.train.checkpoint.TrainCheckpoint`) and the loop's
options object: a checkpoint written before the type existed still resumes, bit for bit.

``data/checkpoint_before_typed_record.pt`` was written by supkd before issue 27 (the loop
built the checkpoint as a plain dict): :func:`make_checkpoint_fixture` run with that code,
a run of :class:`LinearTask` stopped after step 6 of 12.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from supkd.config import OptimConfig, ScheduleConfig, TrainConfig
from supkd.errors import CheckpointError
from supkd.train.checkpoint import load_checkpoint
from supkd.train.tasks import Task

FIXTURE = Path(__file__).parent / "data" / "checkpoint_before_typed_record.pt"
#: The keys of a checkpoint as written before the typed record (besides format, version).
OLD_KEYS = {"model", "spec", "info", "task_state", "optimizer", "scheduler", "scaler", "ema",
            "rng", "epoch", "step", "batch_in_epoch", "epoch_sums", "epoch_images",
            "epoch_time_s", "best_val_acc", "test_acc", "val_acc", "wall_time_s"}


class LinearTask(Task):
    """CE of a linear model (not registered: built directly)."""

    name = "test_linear_ck"

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = nn.Linear(4, 3)

    def training_step(self, batch):
        loss = F.cross_entropy(self.model(batch.x), batch.y)
        return {"loss": loss, "ce": loss.detach()}

    @classmethod
    def build(cls, cfg, bundle, device):
        return cls()


def _loader() -> DataLoader:
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(32, 4, generator=g), torch.randint(0, 3, (32,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=8, shuffle=False)


def _kwargs(run_dir: Path) -> dict:
    return {"train": TrainConfig(epochs=3, progress=False, ema_decay=0.5),
            "optim": OptimConfig(lr=0.5, momentum=0.9, weight_decay=1e-4),
            "schedule": ScheduleConfig(name="cosine"), "val_loader": _loader(),
            "test_loader": _loader(), "run_dir": run_dir, "quiet": True,
            "checkpoint_extra": {"config": {"name": "fixture"}}}


def make_checkpoint_fixture(run_dir: Path) -> Path:
    """Train until the callback stops after step 6; return ``checkpoints/last.pt``."""
    from supkd.train import TrainingInterrupted, fit

    def stop(state):
        state.stop = state.stop or state.step == 6

    with pytest.raises(TrainingInterrupted):
        fit(LinearTask(), _loader(), callbacks=[stop], **_kwargs(run_dir))
    return run_dir / "checkpoints" / "last.pt"


def test_a_checkpoint_written_before_the_typed_record_resumes_bit_for_bit(tmp_path):
    from supkd.train import fit

    raw = load_checkpoint(FIXTURE)
    assert set(raw) - {"format", "version"} == OLD_KEYS | {"config"}
    assert (raw["epoch"], raw["step"], raw["batch_in_epoch"]) == (1, 6, 2)
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    (resumed / "checkpoints" / "last.pt").write_bytes(FIXTURE.read_bytes())
    a, b = LinearTask(), LinearTask()
    res_a = fit(a, _loader(), resume=True, **_kwargs(resumed))
    res_b = fit(b, _loader(), **_kwargs(tmp_path / "straight"))
    assert res_a.status == res_b.status == "completed" and res_a.steps == res_b.steps == 12
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    assert res_a.test_acc == res_b.test_acc and res_a.best_val_acc == res_b.best_val_acc


def test_the_checkpoint_on_disk_keeps_its_flat_layout(tmp_path):
    from supkd.train.checkpoint import TrainCheckpoint, read_checkpoint

    path = make_checkpoint_fixture(tmp_path / "run")
    raw = load_checkpoint(path)
    assert set(raw) - {"format", "version"} == OLD_KEYS | {"config"}
    ck = read_checkpoint(path)
    assert isinstance(ck, TrainCheckpoint) and ck.extra == {"config": {"name": "fixture"}}
    assert (ck.epoch, ck.step, ck.batch_in_epoch, ck.epoch_images) == (1, 6, 2, 16)
    assert set(ck.epoch_sums) == {"loss", "ce"} and ck.ema is not None
    back = ck.to_dict()
    assert set(back) == set(raw) - {"format", "version"}
    assert torch.equal(back["model"]["weight"], raw["model"]["weight"])


def test_a_checkpoint_without_a_required_key_names_it(tmp_path):
    from supkd.train.checkpoint import TrainCheckpoint

    raw = load_checkpoint(FIXTURE)
    del raw["rng"]
    with pytest.raises(CheckpointError, match=r"last\.pt: has no 'rng'"):
        TrainCheckpoint.from_dict(raw, "checkpoint last.pt")


def test_fit_options_take_keywords_and_refuse_unknown_ones():
    from supkd.train import fit
    from supkd.train.options import FitOptions

    opts = FitOptions.of(None, {"quiet": True, "train": None})
    assert opts.quiet and opts.train == TrainConfig() and opts.device == torch.device("cpu")
    assert FitOptions.of(opts, {"resume": True}).quiet  # overrides go over the options
    with pytest.raises(TypeError, match="'epochs'"):
        fit(LinearTask(), _loader(), epochs=3)
