"""fit() and run(): divergence guard, signals, EMA, clipping, metrics, run-directory rules."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from tests.helpers import ToyTask, toy_loader

from supkd.config import TrainConfig
from supkd.errors import ConfigError, UserError
from supkd.train import TrainingInterrupted, fit, run
from supkd.train.signals import StopSignals

_loader = toy_loader




def test_divergence_stops_at_the_first_nonfinite_step_before_updating():
    task = ToyTask(nan_at=3)
    weights = []
    res = fit(
        task, _loader(), train=TrainConfig(epochs=2, progress=False), quiet=True,
        callbacks=[lambda s: weights.append(task.model.weight.detach().clone())],
    )
    assert res["status"] == "diverged"
    assert res["diverged_step"] == 3 and res["steps"] == 2
    assert res["test_acc"] is None and "non-finite" in res["error"]
    # The NaN step never reached the weights: they are those after step 2, all finite.
    assert torch.equal(task.model.weight, weights[-1])
    assert torch.isfinite(task.model.weight).all()


@pytest.fixture
def default_sigint():
    """Python's own SIGINT handler for the test: a shell's background job starts with SIGINT
    ignored, and the test is about what fit does with a real Ctrl-C, not about that shell."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_interrupt_saves_checkpoint_and_resume_is_exact(tmp_path, default_sigint):
    def sigint_at(step):
        def cb(state):
            if state.step == step:
                os.kill(os.getpid(), signal.SIGINT)
        return cb

    cfg = TrainConfig(epochs=3, progress=False, log_every=1)
    straight = ToyTask()
    fit(straight, _loader(), train=cfg, quiet=True, run_dir=tmp_path / "a")

    task = ToyTask()
    with pytest.raises(TrainingInterrupted) as err:
        fit(task, _loader(), train=cfg, quiet=True, run_dir=tmp_path / "b",
            callbacks=[sigint_at(6)])
    assert err.value.step == 6 and err.value.checkpoint.is_file()
    assert isinstance(err.value, KeyboardInterrupt)  # the CLI maps it to exit 130
    resumed = ToyTask()
    res = fit(resumed, _loader(), train=cfg, quiet=True, run_dir=tmp_path / "b", resume=True)
    assert res["status"] == "completed" and res["steps"] == 12
    assert torch.equal(resumed.model.weight, straight.model.weight)
    assert torch.equal(resumed.model.bias, straight.model.bias)
    a = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b]  # same epoch means
    # The handlers were removed again.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_second_signal_exits_at_once():
    with StopSignals(quiet=True) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)


def test_ema_weights_are_the_exponential_average_of_the_trajectory():
    task = ToyTask()
    traj = []
    res = fit(
        task, _loader(), train=TrainConfig(epochs=1, ema_decay=0.5, progress=False),
        quiet=True, callbacks=[lambda s: traj.append(task.model.weight.detach().clone())],
    )
    assert res["status"] == "completed"
    ema = traj[0]  # AveragedModel copies the weights at its first update
    for w in traj[1:]:
        ema = 0.5 * ema + 0.5 * w
    assert torch.allclose(task.model.weight, ema, atol=1e-6)


def test_grad_clip_bounds_the_update():
    from supkd.config import OptimConfig

    task = ToyTask()
    before = [p.detach().clone() for p in task.model.parameters()]
    fit(
        task, _loader(n=8), train=TrainConfig(epochs=1, grad_clip=1e-3, progress=False),
        optim=OptimConfig(lr=1.0, momentum=0.0, weight_decay=0.0), quiet=True,
    )
    delta = torch.cat([(p - b).flatten() for p, b in zip(task.model.parameters(), before)])
    assert 0 < delta.norm() <= 1e-3 * (1 + 1e-5)


def test_run_with_huge_lr_ends_diverged_not_crashed(tmp_path, tiny):
    cfg = tiny("optim.lr=1e6", "schedule.name=constant", "train.epochs=3")
    res = run(cfg, tmp_path / "r", quiet=True)
    assert res["status"] == "diverged" and isinstance(res["diverged_step"], int)
    saved = json.loads((tmp_path / "r" / "result.json").read_text())
    assert saved["status"] == "diverged" and saved["diverged_step"] == res["diverged_step"]
    assert not (tmp_path / "r" / "model.pt").exists()
    # A resumed diverged run is returned as recorded, not retrained.
    assert run(cfg, tmp_path / "r", resume=True) == saved


def test_run_directory_contents_and_reuse_rules(tmp_path, tiny):
    cfg = tiny("meta.table=t1", "train.epochs=2")
    res = run(cfg, tmp_path / "r", quiet=True)
    d = tmp_path / "r"
    for name in ("config.yaml", "metrics.jsonl", "result.json", "model.pt",
                 "checkpoints/last.pt"):
        assert (d / name).is_file(), name
    saved = json.loads((d / "result.json").read_text())
    assert saved == res
    for key in ("status", "test_acc", "val_acc", "best_val_acc", "diverged_step", "error",
                "epochs", "steps", "wall_time_s", "seed", "versions", "device", "name",
                "meta"):
        assert key in saved, key
    assert saved["meta"] == {"table": "t1"} and saved["epochs"] == 2
    assert 0 <= saved["test_acc"] <= 100 and saved["versions"]["torch"] == torch.__version__
    lines = (d / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[-1])["test_acc"] == saved["test_acc"]
    from supkd.train.checks import load_run_config

    assert load_run_config(d / "config.yaml") == cfg  # the resolved config reloads as is
    with pytest.raises(UserError, match="already holds a run"):
        run(cfg, d)
    # Resuming an interrupted run with another config is refused before any training.
    (tmp_path / "r2").mkdir()
    (tmp_path / "r2" / "config.yaml").write_text((d / "config.yaml").read_text())
    with pytest.raises(ConfigError, match=r"different config \(field 'optim\.lr'\)"):
        run(cfg_with(cfg, "optim.lr=0.2"), tmp_path / "r2", resume=True)


def cfg_with(cfg, *overrides):
    from supkd.train.checks import load_run_config

    return load_run_config(cfg, list(overrides))


def test_save_best_keeps_the_best_validation_checkpoint(tmp_path, tiny):
    from supkd.train.checkpoint import load_checkpoint

    res = run(tiny("train.epochs=3", "train.save_best=true"), tmp_path / "r", quiet=True)
    vals = [json.loads(x)["val_acc"] for x in
            (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert res["best_val_acc"] == max(vals) and res["val_acc"] == vals[-1]
    best = load_checkpoint(tmp_path / "r" / "checkpoints" / "best.pt")
    assert best["val_acc"] == max(vals) and best["epoch"] == vals.index(max(vals)) + 1
