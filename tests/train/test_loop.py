"""The loop object's phases, the Task interface it requires, the task registry, and the
loader arguments ``run`` passes explicitly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import supkd
from supkd.config import TASK_SECTIONS, OptimConfig, ScheduleConfig, TaskConfig, TrainConfig
from supkd.errors import ConfigError
from supkd.train import engine, fit
from supkd.train.distributed import DistInfo
from supkd.train.loop import TrainLoop
from supkd.train.run_dir import RunDir
from supkd.train.seeding import expand_seed
from supkd.train.tasks import TASKS, CETask, Task, build_task, register_task

SGD = OptimConfig(lr=0.5, momentum=0.0, weight_decay=0.0)
CONSTANT = ScheduleConfig(name="constant")


class LinearTask(Task):
    """CE of a linear model; ``name`` is not registered (tests build it directly)."""

    name = "test_linear"

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


def _data(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


def _loader(n: int = 32, batch: int = 8) -> DataLoader:
    return DataLoader(TensorDataset(*_data(n)), batch_size=batch)


# --- the Task interface ------------------------------------------------------------------


def test_fit_refuses_a_plain_module_and_names_the_wrappers():
    with pytest.raises(TypeError, match=r"expected a supkd\.train\.tasks\.Task, got Linear.*"
                       r"train_classifier"):  # fmt: skip
        fit(nn.Linear(4, 3), _loader(), quiet=True)


# --- phases ----------------------------------------------------------------------------------


def test_one_step_is_one_plain_sgd_update_and_sums_the_parts():
    task = LinearTask()
    loop = TrainLoop(task, _loader(), train=TrainConfig(progress=False), optim=SGD,
                     schedule=CONSTANT, quiet=True)  # fmt: skip
    loop.setup()
    loop.compile()
    x, y = _data()
    x, y = x[:8], y[:8]
    w0, b0 = task.model.weight.detach().clone(), task.model.bias.detach().clone()
    # The reference: the same loss and its gradient by hand, then w <- w - lr * grad.
    w, b = w0.clone().requires_grad_(), b0.clone().requires_grad_()
    ref_loss = F.cross_entropy(x @ w.T + b, y)
    ref_loss.backward()
    loss = loop.step((x, y))
    torch.testing.assert_close(loss.detach(), ref_loss.detach())
    torch.testing.assert_close(task.model.weight.detach(), w0 - 0.5 * w.grad)
    torch.testing.assert_close(task.model.bias.detach(), b0 - 0.5 * b.grad)
    assert set(loop.meters.sums) == {"loss", "ce"}
    assert loop.meters.sums["ce"].item() == pytest.approx(ref_loss.item())
    assert loop.meters.images == 8
    loop.after_step(loss, bar=None)
    assert (loop.state.step, loop.state.batch_in_epoch, int(loop.step_counter)) == (1, 1, 1)


def test_epoch_record_is_the_mean_of_each_part_over_the_steps():
    task = LinearTask()
    loop = TrainLoop(task, _loader(), train=TrainConfig(epochs=1, progress=False), optim=SGD,
                     schedule=CONSTANT, quiet=True)  # fmt: skip
    losses = []
    loop.setup()
    loop.compile()
    for x, y in _loader():
        losses.append(float(loop.step((x, y)).detach()))
        loop.after_step(torch.tensor(losses[-1]), bar=None)
    record = loop.epoch_record(0)
    assert record["epoch"] == 1 and record["step"] == 4 and record["lr"] == 0.5
    assert record["train_loss"] == pytest.approx(sum(losses) / 4, rel=1e-6)
    assert record["train_ce"] == pytest.approx(sum(losses) / 4, rel=1e-6)


def test_resume_restores_position_weights_and_drops_later_metric_lines(tmp_path: Path):
    cfg = TrainConfig(epochs=1, progress=False)
    first = LinearTask()
    fit(first, _loader(), train=cfg, optim=SGD, schedule=CONSTANT, run_dir=tmp_path, quiet=True)
    rd = RunDir(tmp_path)
    # A line the killed run wrote after its last checkpoint (epoch 2 never checkpointed).
    with rd.metrics_path.open("a") as f:
        f.write(json.dumps({"epoch": 2, "step": 8}) + "\n")
    loop = TrainLoop(LinearTask(), _loader(), train=TrainConfig(epochs=2, progress=False),
                     optim=SGD, schedule=CONSTANT, run_dir=tmp_path, quiet=True)  # fmt: skip
    loop.setup()
    loop.resume()
    assert (loop.state.epoch, loop.state.step, loop.state.batch_in_epoch) == (1, 4, 0)
    assert torch.equal(loop.trained.model.weight, first.model.weight)
    assert [r["epoch"] for r in loop.state.history] == [1]
    assert [r["epoch"] for r in rd.read_metrics()] == [1]


def test_resume_without_a_checkpoint_starts_fresh(tmp_path: Path):
    loop = TrainLoop(LinearTask(), _loader(), train=TrainConfig(progress=False), optim=SGD,
                     run_dir=tmp_path, quiet=True)  # fmt: skip
    loop.setup()
    loop.resume()
    assert (loop.state.epoch, loop.state.step) == (0, 0)
    assert not RunDir(tmp_path).metrics_path.exists()


def test_checkpoint_paths_come_from_the_run_directory(tmp_path: Path):
    fit(LinearTask(), _loader(), train=TrainConfig(epochs=1, progress=False), optim=SGD,
        run_dir=tmp_path, quiet=True)  # fmt: skip
    rd = RunDir(tmp_path)
    assert rd.last_checkpoint.is_file() and rd.metrics_path.is_file()
    assert rd.tensorboard == tmp_path / "tensorboard"
    assert not rd.tensorboard.exists()  # train.tensorboard is off by default


# --- the task registry -----------------------------------------------------------------------


def test_builtin_tasks_are_registered_when_the_package_is_imported():
    src = str(Path(supkd.__file__).parents[1])
    code = (
        "import supkd.train.tasks as t, supkd.config as c;"
        "print(sorted(t.TASKS), sorted(c.TASK_SECTIONS))"
    )
    env = {**os.environ, "PYTHONPATH": src}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.strip()  # fmt: skip
    names = ["ce", "distill", "linear", "supcon"]
    assert out == f"{names} {names}"


def test_register_task_refuses_taken_and_empty_names():
    class AnotherCE(CETask):
        name = "ce"

    with pytest.raises(ValueError, match="task 'ce' is already registered"):
        register_task(AnotherCE)
    assert TASKS["ce"] is CETask

    class Nameless(LinearTask):
        name = ""

    with pytest.raises(ValueError, match="non-empty"):
        register_task(Nameless)


def test_a_task_whose_config_section_is_taken_is_not_half_registered():
    TASK_SECTIONS.add("test_half", TaskConfig)
    try:

        class Half(LinearTask):
            name = "test_half"

        with pytest.raises(ValueError, match="already registered"):
            register_task(Half)
        assert "test_half" not in TASKS
    finally:
        TASK_SECTIONS.remove("test_half")


def test_a_registered_task_types_its_config_section_and_builds(tiny):
    @dataclass
    class EchoConfig(TaskConfig):
        name: str = "test_echo"
        scale: float = 2.0

    class EchoTask(LinearTask):
        Config = EchoConfig
        name = "test_echo"

        @classmethod
        def build(cls, cfg, bundle, device):
            task = cls()
            task.scale = cfg.task.scale
            return task

    register_task(EchoTask)
    try:
        cfg = tiny("task.name=test_echo", "task.scale=3.5")
        assert type(cfg.task) is EchoConfig
        task = build_task(cfg, bundle=None, device="cpu")
        assert isinstance(task, EchoTask) and task.scale == 3.5
    finally:
        TASKS.remove("test_echo")
        TASK_SECTIONS.remove("test_echo")
    with pytest.raises(ConfigError, match=r"task\.name.*test_echo"):
        tiny("task.name=test_echo")


# --- loaders: explicit arguments -------------------------------------------------------------


class _Recorder:
    def __init__(self, train_len: int = 3) -> None:
        self.calls: list[tuple[tuple, dict]] = []
        self.train_len = train_len

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return [None] * (self.train_len if kwargs["train"] else 1)


def _bundle(val: bool = True) -> SimpleNamespace:
    return SimpleNamespace(train=list(range(64)), val=[0] if val else None)


def test_build_loaders_passes_the_run_seeds_and_this_ranks_shard(monkeypatch, tiny):
    rec = _Recorder()
    monkeypatch.setattr(engine, "make_loader", rec)
    cfg = tiny("seed=7", "train.batch_size=32", "train.eval_batch_size=100",
                      "data.num_workers=0")  # fmt: skip
    seeds = expand_seed(7)
    task = SimpleNamespace(views=2, augment="supcon")
    dinfo = DistInfo(rank=1, world_size=2)
    bundle = _bundle()
    loaders = engine.build_loaders(cfg, bundle, task, seeds, dinfo)
    (train_args, train_kw), (test_args, test_kw), (val_args, val_kw) = rec.calls
    assert train_args == (bundle, "train", 16)  # 32 images per global batch over 2 ranks
    common = {"device": dinfo.device, "seed": seeds.data, "aug_seed": seeds.augment,
              "num_workers": 0, "gpu_resident": cfg.data.gpu_resident}  # fmt: skip
    assert train_kw == {"train": True, "views": 2, "augment": "supcon", "rank": 1,
                        "world_size": 2, **common}  # fmt: skip
    # Evaluation loaders read the whole split on every rank, unaugmented.
    assert test_args == (bundle, "test", 100) and val_args == (bundle, "val", 100)
    assert test_kw == val_kw == {"train": False, "augment": "none", **common}
    assert loaders.val is not None and len(loaders.train) == 3


def test_build_loaders_without_a_validation_split(monkeypatch, tiny):
    rec = _Recorder()
    monkeypatch.setattr(engine, "make_loader", rec)
    cfg = tiny()
    loaders = engine.build_loaders(cfg, _bundle(val=False), CETask(nn.Linear(4, 3)),
                                   expand_seed(0), DistInfo())  # fmt: skip
    assert loaders.val is None and [c[0][1] for c in rec.calls] == ["train", "test"]


def test_build_loaders_refuses_batches_that_do_not_split_or_fill(monkeypatch, tiny):
    monkeypatch.setattr(engine, "make_loader", _Recorder(train_len=0))
    task = CETask(nn.Linear(4, 3))
    with pytest.raises(ConfigError, match=r"train\.batch_size.*multiple of the 3 processes"):
        engine.build_loaders(tiny("train.batch_size=32"), _bundle(), task,
                             expand_seed(0), DistInfo(world_size=3))  # fmt: skip
    with pytest.raises(ConfigError, match=r"train\.batch_size.*larger than the training split"):
        engine.build_loaders(tiny("train.batch_size=32"), _bundle(), task,
                             expand_seed(0), DistInfo())  # fmt: skip
