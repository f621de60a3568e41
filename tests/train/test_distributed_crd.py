"""CRD under 2-rank gloo DDP: the distill task gathers the global batch (representations,
labels, dataset indices), so every rank computes the same loss, updates its memory bank with
every rank's samples, and ends with the bank, NCE constants, embeddings and student weights
of one process training on the concatenated batches.

Tiny MLPs without BatchNorm (so DDP equals one process exactly up to float rounding); the
workers save their state and every comparison happens in this process.
"""

from __future__ import annotations

import os

import pytest
import torch
from tests.helpers import spawn_ranks, train_global_batches
from torch import nn

from supkd.train import distributed as D
from supkd.train.tasks import distill_task_from_modules

WORLD, B, STEPS, N = 2, 4, 4, 24  # per-rank batch, SGD steps, training samples


def _data():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(N, 6, generator=g)
    y = torch.randint(0, 5, (N,), generator=g)
    order = torch.randperm(N, generator=g)  # each step's global batch: WORLD * B samples
    return x, y, order


def _task():
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 5))
    teacher = nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 5))
    # 5 sampled negatives out of 23: exercises the (seed, step) draws on both ranks.
    return distill_task_from_modules(
        student, teacher, torch.zeros(2, 6), loss="crd",
        loss_args={"feat_dim": 4, "num_negatives": 5}, alpha=0.7, num_samples=N, seed=11,
    )  # fmt: skip


def _train(task, step_module, rows_of_step):
    kd = train_global_batches(task, step_module, rows_of_step, _data(), steps=STEPS,
                              global_batch=WORLD * B, lr=0.3)
    crd = task.criterion
    return {
        "params": {k: v.detach().clone() for k, v in task.named_parameters()
                   if v.requires_grad},
        "memory_s": crd.memory_s.clone(), "memory_t": crd.memory_t.clone(),
        "z": (crd.z_s, crd.z_t), "steps": crd.steps, "kd": kd,
    }


def _worker(rank: int, port: int, out_dir: str) -> dict:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD))
    info = D.init_distributed("cpu", timeout_s=60)
    task = _task()
    res = _train(task, D.wrap_ddp(task, info), lambda g: g[rank * B : (rank + 1) * B])
    D.barrier()
    return res


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    return spawn_ranks(_worker, WORLD, tmp_path_factory, name="ddp_crd")


def test_crd_under_ddp_equals_one_process_on_the_global_batch(ranks):
    task = _task()
    reference = _train(task, task, lambda g: g)
    for res in ranks:
        assert res["steps"] == reference["steps"] == STEPS
        assert res["z"] == pytest.approx(reference["z"], rel=1e-5)
        torch.testing.assert_close(res["kd"], reference["kd"], rtol=1e-5, atol=1e-6)
        for name in ("memory_s", "memory_t"):
            torch.testing.assert_close(res[name], reference[name], rtol=1e-5, atol=1e-6)
        assert res["params"].keys() == reference["params"].keys()
        for k, v in reference["params"].items():
            torch.testing.assert_close(res["params"][k], v, rtol=1e-5, atol=1e-6, msg=k)
    # Every rank holds the same bank, every row of the global batches updated.
    assert torch.equal(ranks[0]["memory_s"], ranks[1]["memory_s"])
    assert any(k.startswith("criterion.embed_s") for k in reference["params"])
