"""Bit-exact resume on CPU: a run stopped twice (mid-epoch and at an epoch's last step) and
resumed ends with the same weights, metrics and accuracy as a run never interrupted."""

from __future__ import annotations

import json

import pytest
import torch

from supkd.train import TrainingInterrupted, run
from supkd.train.checkpoint import load_checkpoint


def _stop_at(step: int):
    def cb(state):
        if state.step == step:
            state.stop = True

    return cb


def _metrics(path):
    drop = {"epoch_time_s", "images_per_s", "wall_time_s"}
    return [
        {k: v for k, v in json.loads(line).items() if k not in drop}
        for line in path.read_text().splitlines()
    ]


@pytest.mark.parametrize("kind", ["distill_adapter_ema", "supcon", "distill_crd_warmup"])
def test_interrupted_and_resumed_run_is_bit_identical(tmp_path, tiny, teacher_runs, kind):
    if kind == "distill_crd_warmup":
        # CRD's embeddings, memory bank, NCE constants and negative draws live in the task
        # state; the alpha warm-up spans both interruptions (2 of the 6 steps' epochs).
        overrides = [
            "task.name=distill", f"task.teacher={teacher_runs['ce']}", "task.loss=crd",
            "task.representation=embedding", "task.loss_args={num_negatives: 16}",
            "task.alpha_warmup_epochs=1.5", "train.epochs=2", "deterministic=true",
        ]
    elif kind == "supcon":
        overrides = ["task.name=supcon", "train.epochs=2", "deterministic=true"]
    else:
        # Embedding of a width-8 teacher (64) vs a width-4 student (32): logit_mse needs an
        # adapter, which lives in the task state; EMA state is resumed too.
        overrides = [
            "task.name=distill", f"task.teacher={teacher_runs['ce']}", "task.loss=logit_mse",
            "task.representation=embedding", "train.ema_decay=0.9", "train.epochs=2",
            "deterministic=true", "schedule.warmup_epochs=0.5",
        ]
    cfg = tiny(*overrides)
    straight = run(cfg, tmp_path / "straight", quiet=True)
    assert straight["status"] == "completed" and straight["steps"] == 6

    d = tmp_path / "resumed"
    with pytest.raises(TrainingInterrupted):
        run(cfg, d, quiet=True, callbacks=[_stop_at(2)])  # mid-epoch 1
    assert load_checkpoint(d / "checkpoints" / "last.pt")["batch_in_epoch"] == 2
    with pytest.raises(TrainingInterrupted):
        run(cfg, d, resume=True, quiet=True, callbacks=[_stop_at(3)])  # last step of epoch 1
    resumed = run(cfg, d, resume=True, quiet=True)

    assert resumed["status"] == "completed" and resumed["steps"] == 6
    assert resumed["test_acc"] == straight["test_acc"]
    a = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(d / "model.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert _metrics(tmp_path / "straight" / "metrics.jsonl") == _metrics(d / "metrics.jsonl")
    ca = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    cb = load_checkpoint(d / "checkpoints" / "last.pt")
    for k, v in ca["task_state"].get("adapter", {}).items():
        assert torch.equal(v, cb["task_state"]["adapter"][k])
    for k, v in ca["task_state"].get("loss", {}).items():
        if k == "_extra_state":
            for name, x in v.items():
                same = torch.equal(x, cb["task_state"]["loss"][k][name]) if isinstance(
                    x, torch.Tensor) else x == cb["task_state"]["loss"][k][name]
                assert same, name
        else:
            assert torch.equal(v, cb["task_state"]["loss"][k]), k
    if kind == "distill_crd_warmup":
        assert ca["task_state"]["loss"]["_extra_state"]["steps"] == 6
