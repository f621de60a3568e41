"""The feature losses' trained parts under 2-rank gloo DDP (issue 22).

VID (per-stage regressors and variances) and CC (embeddings, on the gathered global batch)
on a tiny conv net without BatchNorm: DDP equals one process on the concatenated batches up
to float rounding. OFD and ReviewKD, whose connectors hold BatchNorms (per-rank batch
statistics, so no single-process equality), on supkd ResNets: they train, and every rank ends
with the same connector weights. The workers save their state; every comparison happens in
this process.
"""

from __future__ import annotations

import os
import traceback
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from tests.helpers import train_global_batches
from torch import nn

from supkd.models import ModelOutput, create_model
from supkd.train import distributed as D
from supkd.train.tasks import distill_task_from_modules
from supkd.utils.ports import free_port

WORLD, B, STEPS, N = 2, 4, 3, 24  # per-rank batch, SGD steps, samples

pytestmark = pytest.mark.slow


class TinyConv(nn.Module):
    """Two conv stages (no BatchNorm), pooled embedding, logits; pre-ReLU on request."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.fc = nn.Linear(2 * width, 5)

    def forward_intermediates(self, x, *, preact=False):
        a = self.conv1(x)
        b = self.conv2(F.relu(a))
        emb = F.relu(b).mean(dim=(2, 3))
        out = {"stem": a if preact else F.relu(a), "layer1": b if preact else F.relu(b)}
        return {**out, "embedding": emb, "logits": self.fc(emb)}

    def forward(self, x):
        feats = self.forward_intermediates(x)
        return ModelOutput(feats["logits"], feats["embedding"], None)


def _data():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(N, 1, 4, 4, generator=g)
    y = torch.randint(0, 5, (N,), generator=g)
    return x, y, torch.randperm(N, generator=g)


def _task(loss: str):
    torch.manual_seed(0)
    if loss in ("vid", "cc"):
        student, teacher = TinyConv(3), TinyConv(4)
        args = {"feat_dim": 6} if loss == "cc" else {"stages": ["stem", "layer1"]}
        rep = "embedding" if loss == "cc" else "logits"
    else:
        kw = {"num_classes": 5, "in_channels": 1}
        student, teacher = create_model("resnet18", width=2, **kw), create_model(
            "resnet18", width=4, **kw)
        args, rep = {}, "logits"
    return distill_task_from_modules(student, teacher.eval(), torch.zeros(2, 1, 4, 4),
                                     loss=loss, loss_args=args, representation=rep, alpha=0.5)


def _train(task, step_module, rows_of_step):
    kd = train_global_batches(task, step_module, rows_of_step, _data(), steps=STEPS,
                              global_batch=WORLD * B, lr=0.1)
    params = {k: v.detach().clone() for k, v in task.named_parameters() if v.requires_grad}
    return {"params": params, "kd": kd}


def _worker(rank: int, port: int, out_dir: str, loss: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD))
    try:
        info = D.init_distributed("cpu", timeout_s=60)
        task = _task(loss)
        res = _train(task, D.wrap_ddp(task, info), lambda g: g[rank * B:(rank + 1) * B])
        D.barrier()
        torch.save(res, Path(out_dir, f"rank{rank}.pt"))
    except BaseException:
        Path(out_dir, f"error{rank}.txt").write_text(traceback.format_exc())
        raise
    finally:
        D.cleanup()


def _spawn(tmp_path, loss):
    try:
        mp.spawn(_worker, args=(free_port(), str(tmp_path), loss), nprocs=WORLD)
    except Exception:
        errors = [p.read_text() for p in sorted(tmp_path.glob("error*.txt"))]
        pytest.fail("DDP worker failed:\n" + "\n".join(errors))
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.parametrize("loss", ["vid", "cc"])
def test_trained_loss_parts_under_ddp_equal_one_process(tmp_path, loss):
    ranks = _spawn(tmp_path, loss)
    task = _task(loss)
    reference = _train(task, task, lambda g: g)
    assert any(k.startswith("criterion.") for k in reference["params"])
    for res in ranks:
        assert res["params"].keys() == reference["params"].keys()
        for k, v in reference["params"].items():
            torch.testing.assert_close(res["params"][k], v, rtol=1e-5, atol=1e-6, msg=k)
    if loss == "cc":  # the global batch's loss on every rank
        torch.testing.assert_close(ranks[0]["kd"], reference["kd"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("loss", ["ofd", "reviewkd"])
def test_connectors_with_batchnorm_train_alike_on_every_rank(tmp_path, loss):
    ranks = _spawn(tmp_path, loss)
    start = dict(_task(loss).named_parameters())
    a, b = ranks
    moved = False
    for k, v in a["params"].items():
        assert torch.equal(v, b["params"][k]), k  # DDP's averaged gradients: same weights
        if k.startswith("criterion."):
            moved = moved or not torch.equal(v, start[k].detach())
    assert moved, "the connectors trained"
    assert torch.isfinite(a["kd"]).all()
