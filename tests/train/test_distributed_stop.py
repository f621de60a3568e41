"""Stop requests under DDP: every rank stops after the same step.

Two CPU processes (gloo, loopback) run ``fit`` on a linear task. A SIGTERM that reaches only
rank 1, or a callback that stops only rank 0, must stop both ranks after that same step (a
rank that left alone would leave the other waiting in DDP's gradient all-reduce until the
process-group timeout). The workers save what they saw; the checks run in this process.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from tests.helpers import ToyTask, spawn_ranks, toy_loader
from torch.utils.data import DataLoader

from supkd.config import TrainConfig
from supkd.train import TrainingInterrupted, fit
from supkd.train import distributed as D
from supkd.train.signals import stop_check_due

WORLD = 2
SIGNAL_STEP = 2  # rank 1 alone receives SIGTERM after this step
CALLBACK_STEP = 3  # rank 0's callback alone asks to stop after this step


def _loader(rank: int) -> DataLoader:
    return toy_loader(64, 8, seed=10 + rank)  # each rank its own shard; 8 steps per epoch


def _fit_until_stopped(rank: int, run_dir: Path, callback) -> dict[str, Any]:
    try:
        fit(
            ToyTask(),
            _loader(rank),
            train=TrainConfig(epochs=2, progress=False, log_every=4),
            quiet=True,
            run_dir=run_dir,
            callbacks=[callback],
        )
    except TrainingInterrupted as exc:
        return {"step": exc.step, "reason": exc.reason, "checkpoint": exc.checkpoint}
    return {"step": None}


def _worker(rank: int, port: int, out_dir: str) -> dict[str, Any]:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
        LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD),
    )  # fmt: skip
    out = Path(out_dir)
    # A short timeout: a rank left waiting fails the test instead of hanging it.
    D.init_distributed("cpu", timeout_s=30)

    def sigterm_on_rank_1(state):
        if rank == 1 and state.step == SIGNAL_STEP:
            os.kill(os.getpid(), signal.SIGTERM)

    def stop_on_rank_0(state):
        if rank == 0 and state.step == CALLBACK_STEP:
            state.stop = True

    return {
        "signal": _fit_until_stopped(rank, out / "signal", sigterm_on_rank_1),
        "callback": _fit_until_stopped(rank, out / "callback", stop_on_rank_0),
    }


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict[str, Any]]:
    return spawn_ranks(_worker, WORLD, tmp_path_factory, name="dist_stop")


def test_signal_on_one_rank_stops_every_rank_after_the_same_step(ranks):
    r0, r1 = ranks[0]["signal"], ranks[1]["signal"]
    assert r0["step"] == r1["step"] == SIGNAL_STEP
    assert r1["reason"] == "SIGTERM"
    assert r0["reason"] == "stop requested on another rank"
    # Rank 0 alone writes the checkpoint, at the step both ranks stopped after.
    assert r1["checkpoint"] is None
    ck = torch.load(r0["checkpoint"], weights_only=False)
    assert ck["step"] == SIGNAL_STEP and ck["batch_in_epoch"] == SIGNAL_STEP


def test_callback_stop_on_one_rank_stops_every_rank(ranks):
    r0, r1 = ranks[0]["callback"], ranks[1]["callback"]
    assert r0["step"] == r1["step"] == CALLBACK_STEP
    assert r0["reason"] == "stopped by a callback"
    assert r1["reason"] == "stop requested on another rank"


@pytest.mark.parametrize(
    ("step", "epoch_end", "cuda", "due"),
    [
        (1, False, False, True),  # CPU: every step
        (7, False, False, True),
        (4, False, True, True),  # CUDA: multiples of log_every (4 here)
        (8, False, True, True),
        (5, False, True, False),
        (7, False, True, False),
        (7, True, True, True),  # CUDA: an epoch's last step
    ],
)
def test_stop_flags_are_combined_every_step_on_cpu_every_log_every_on_cuda(
    step, epoch_end, cuda, due
):
    assert stop_check_due(step, epoch_end, log_every=4, cuda=cuda) is due
