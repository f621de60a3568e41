"""DDP helpers: gather_with_grad's value and gradients, the all_gather pitfall, DDP training.

Two CPU processes on gloo over loopback, spawned once per module (torch.multiprocessing
with a free 127.0.0.1 port). The workers only compute and save tensors; every comparison
against the single-process reference on the concatenated batch happens in this process.

Usage convention under test (see supkd.train.distributed): every rank computes the loss on
the whole gathered batch, and DDP averages parameter gradients over the W ranks. So the
gradient that reaches rank r's local inputs, divided by W (DDP's averaging), must equal the
one-process gradient w.r.t. those rows; the loss value must equal the one-process value.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from tests.helpers import spawn_ranks
from torch import nn

from supkd.errors import UserError
from supkd.losses import SupConLoss, build_loss
from supkd.train import distributed as D

WORLD = 2
B = 4  # per-rank batch
STEPS = 3  # SGD steps in the DDP training check
TOL = 1e-6


# --------------------------------------------------------------------------- inputs
def _make_inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    n = WORLD * B
    feats = nn.functional.normalize(torch.randn(n, 2, 6, generator=g, dtype=torch.float64), dim=-1)
    # Single view: rank 0's slice has a class (2) whose only other member sits on rank 1, so
    # the anchor has a positive globally but none locally; class 9 occurs once in all.
    feats1 = nn.functional.normalize(torch.randn(n, 1, 6, generator=g, dtype=torch.float64), -1)
    labels1 = torch.tensor([0, 0, 2, 9, 1, 1, 2, 0])
    return {
        "supcon_feats": feats,
        "supcon_labels": torch.randint(0, 3, (n,), generator=g),
        "supcon1_feats": feats1,
        "supcon1_labels": labels1,
        "kd_student": torch.randn(n, 6, generator=g, dtype=torch.float64),
        "kd_teacher": torch.randn(n, 6, generator=g, dtype=torch.float64) * 3.0,
        "kd_teacher_wide": torch.randn(n, 9, generator=g, dtype=torch.float64),
        "kd_labels": torch.randint(0, 3, (n,), generator=g),
        "ddp_x": torch.randn(STEPS, n, 2, 5, generator=g, dtype=torch.float64),
        "ddp_y": torch.randint(0, 3, (STEPS, n), generator=g),
    }


# name -> (loss factory, argument keys in call order, index of the argument with a gradient)
CASES: dict[str, tuple[Any, tuple[str, ...], int]] = {
    "supcon": (lambda: SupConLoss(temperature=0.1), ("supcon_feats", "supcon_labels"), 0),
    "supcon_1view": (
        lambda: SupConLoss(temperature=0.5, base_temperature=0.07),
        ("supcon1_feats", "supcon1_labels"),
        0,
    ),
    "supcon_kd": (
        lambda: build_loss("supcon_kd", temperature=0.1),
        ("kd_student", "kd_teacher", "kd_labels"),
        0,
    ),
    "supcon_kd_both_norm": (
        lambda: build_loss("supcon_kd", temperature=0.2, normalize_teacher=True),
        ("kd_student", "kd_teacher", "kd_labels"),
        0,
    ),
    "gram": (lambda: build_loss("gram"), ("kd_student", "kd_teacher_wide"), 0),
    "gram_normalized": (
        lambda: build_loss("gram", normalize=True),
        ("kd_student", "kd_teacher_wide"),
        0,
    ),
    "gram_channel": (lambda: build_loss("gram", mode="channel"), ("kd_student", "kd_teacher"), 0),
    # The KD baselines that compare samples (issue 14); CRD's bank: test_distributed_crd.py.
    "dist": (lambda: build_loss("dist", temperature=2.0), ("kd_student", "kd_teacher"), 0),
    "sp": (lambda: build_loss("sp"), ("kd_student", "kd_teacher_wide"), 0),
    "rkd": (lambda: build_loss("rkd"), ("kd_student", "kd_teacher_wide"), 0),
}


class _TinyEncoder(nn.Module):
    """(N, V, 5) -> L2-normalized (N, V, 4); no BatchNorm, so DDP == one process exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.net(x), dim=-1)


def _make_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return _TinyEncoder().double()


def _make_opt(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-3)


# --------------------------------------------------------------------------- worker side
def _local(x: torch.Tensor, rank: int) -> torch.Tensor:
    return x[rank * B : (rank + 1) * B].clone()


def _plain_gather(x: torch.Tensor, own_slot: bool) -> torch.Tensor:
    """What public multi-GPU SupCon code does: list all_gather (optionally own slot put back)."""
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.detach())
    if own_slot:
        parts[dist.get_rank()] = x
    return torch.cat(parts)


def _run_case(name: str, inputs: dict[str, torch.Tensor], rank: int, gather) -> dict[str, Any]:
    factory, keys, grad_idx = CASES[name]
    args = [_local(inputs[k], rank) for k in keys]
    args[grad_idx].requires_grad_(True)
    loss = factory()(*[gather(a) for a in args])
    out: dict[str, Any] = {"requires_grad": loss.requires_grad, "loss": loss.detach()}
    if loss.requires_grad:
        loss.backward()
        out["grad"] = args[grad_idx].grad.detach().clone()
    return out


def _worker_body(rank: int, port: int, inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
    )
    info = D.init_distributed("cpu", timeout_s=60)
    res: dict[str, Any] = {
        "info": (info.rank, info.world_size, info.enabled, info.backend, str(info.device)),
        "helpers": (D.rank(), D.world_size(), D.is_main(), D.is_enabled()),
        "reinit_same": D.init_distributed("cpu") == info,
    }
    full = inputs["kd_student"]
    res["gathered"] = D.gather_with_grad(_local(full, rank))
    res["gathered_labels"] = D.gather_with_grad(_local(inputs["kd_labels"], rank))
    res["broadcast"] = D.broadcast_object({"from": rank})
    res["mean"] = D.all_reduce_mean(torch.tensor([float(rank), 10.0 * rank]))
    res["sum"] = D.all_reduce_sum(torch.tensor([rank + 1]))
    res["min_max"] = (
        D.all_reduce_min(torch.tensor([rank, -rank])),
        D.all_reduce_max(torch.tensor([rank, -rank])),
    )

    res["cases"] = {name: _run_case(name, inputs, rank, D.gather_with_grad) for name in CASES}
    res["plain"] = _run_case("supcon", inputs, rank, lambda x: _plain_gather(x, own_slot=False))
    res["own_slot"] = {
        name: _run_case(name, inputs, rank, lambda x: _plain_gather(x, own_slot=True))
        for name in ("supcon", "supcon_kd")
    }

    # Unequal per-rank batches: both ranks must raise (no hang), naming the shapes.
    try:
        D.gather_with_grad(torch.zeros(3 if rank == 0 else 2, 4))
        res["mismatch"] = None
    except ValueError as exc:
        res["mismatch"] = str(exc)

    try:
        D.gather_with_grad(torch.tensor(1.0))
        res["scalar"] = None
    except ValueError as exc:
        res["scalar"] = str(exc)

    # DDP training: ranks start from different seeds; wrap_ddp broadcasts rank 0's weights.
    model = _make_model(seed=100 + rank)
    ddp = D.wrap_ddp(model, info)
    res["ddp_type"] = type(ddp).__name__
    opt = _make_opt(model)
    loss_fn = SupConLoss(temperature=0.1)
    losses = []
    for step in range(STEPS):
        x = _local(inputs["ddp_x"][step], rank)
        y = _local(inputs["ddp_y"][step], rank)
        loss = loss_fn(D.gather_with_grad(ddp(x)), D.gather_with_grad(y))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    res["ddp_losses"] = torch.stack(losses)
    res["ddp_state"] = {k: v.clone() for k, v in D.unwrap_ddp(ddp).state_dict().items()}
    res["ddp_in_sync"] = D.replicas_in_sync(ddp)
    res["fingerprint"] = D.state_fingerprint(ddp)
    res["fingerprints"] = D.replica_fingerprints(ddp)
    with torch.no_grad():  # desync one value on rank 1: every rank must see it
        if rank == 1:
            model.net[0].bias[0] += 1e-12
    res["ddp_in_sync_after_desync"] = D.replicas_in_sync(ddp)
    D.barrier()
    return res


def _worker(rank: int, port: int, out_dir: str) -> dict[str, Any]:
    return _worker_body(rank, port, torch.load(Path(out_dir) / "inputs.pt"))


# --------------------------------------------------------------------------- parent side
@pytest.fixture(scope="module")
def inputs() -> dict[str, torch.Tensor]:
    return _make_inputs()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory, inputs) -> list[dict[str, Any]]:
    return spawn_ranks(_worker, WORLD, tmp_path_factory, name="dist",
                       prepare=lambda d: torch.save(inputs, d / "inputs.pt"))


def _reference(name: str, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """One process on the concatenated batch: loss value and gradient w.r.t. every row."""
    factory, keys, grad_idx = CASES[name]
    args = [inputs[k].clone() for k in keys]
    args[grad_idx].requires_grad_(True)
    loss = factory()(*args)
    loss.backward()
    return loss.detach(), args[grad_idx].grad


def test_init_and_helpers_under_torchrun_env(ranks):
    for r, res in enumerate(ranks):
        assert res["info"] == (r, WORLD, True, "gloo", "cpu")
        assert res["helpers"] == (r, WORLD, r == 0, True)
        assert res["reinit_same"]
        assert res["broadcast"] == {"from": 0}
        assert torch.equal(res["mean"], torch.tensor([0.5, 5.0]))
        assert torch.equal(res["sum"], torch.tensor([3]))
        assert torch.equal(res["min_max"][0], torch.tensor([0, -1]))
        assert torch.equal(res["min_max"][1], torch.tensor([1, 0]))


def test_gather_concatenates_in_rank_order(ranks, inputs):
    for res in ranks:
        assert torch.equal(res["gathered"], inputs["kd_student"])
        assert torch.equal(res["gathered_labels"], inputs["kd_labels"])


@pytest.mark.parametrize("name", list(CASES))
def test_loss_and_grad_equal_one_process_on_concatenated_batch(ranks, inputs, name):
    ref_loss, ref_grad = _reference(name, inputs)
    assert ref_grad.abs().max() > 1e-3  # a non-trivial gradient to compare
    for r, res in enumerate(ranks):
        got = res["cases"][name]
        torch.testing.assert_close(got["loss"], ref_loss, rtol=TOL, atol=TOL)
        # DDP divides the summed gradient by W: that average is what the optimizer sees.
        torch.testing.assert_close(got["grad"] / WORLD, _local(ref_grad, r), rtol=TOL, atol=TOL)


def test_single_view_supcon_counts_positives_from_other_ranks(ranks, inputs):
    # Rank 0's sample with label 2 has its only positive on rank 1: a local-only loss would
    # drop it as positive-less, the gathered loss keeps it. Its gradient must be non-zero.
    _, ref_grad = _reference("supcon_1view", inputs)
    assert ref_grad[2].abs().max() > 1e-3
    torch.testing.assert_close(ranks[0]["cases"]["supcon_1view"]["grad"][2] / WORLD, ref_grad[2])


def test_plain_all_gather_cuts_the_gradient(ranks, inputs):
    ref_loss, ref_grad = _reference("supcon", inputs)
    for r, res in enumerate(ranks):
        # The forward value is right, but there is nothing to backpropagate through.
        torch.testing.assert_close(res["plain"]["loss"], ref_loss, rtol=TOL, atol=TOL)
        assert not res["plain"]["requires_grad"]
        # The usual patch (own slot put back) gets the direction of the local part only:
        # after DDP averaging the update is 1/W of the true one for the whole-batch loss...
        local_ref = _local(ref_grad, r)
        own = res["own_slot"]["supcon"]["grad"] / WORLD
        assert (own - local_ref).abs().max() > 1e-3
        torch.testing.assert_close(own, local_ref / WORLD, rtol=TOL, atol=TOL)


def test_own_slot_gather_is_wrong_for_supcon_kd(ranks, inputs):
    _, ref_grad = _reference("supcon_kd", inputs)
    for r, res in enumerate(ranks):
        own = res["own_slot"]["supcon_kd"]["grad"] / WORLD
        assert (own - _local(ref_grad, r)).abs().max() > 1e-3


def test_unequal_batches_raise_on_every_rank(ranks):
    for res in ranks:
        assert res["mismatch"] is not None
        assert "same tensor shape on every rank" in res["mismatch"]
        assert "(3, 4)" in res["mismatch"] and "(2, 4)" in res["mismatch"]
        assert res["scalar"] is not None and "0-dim" in res["scalar"]


def test_ddp_sgd_steps_match_one_process_and_ranks_agree(ranks, inputs):
    assert ranks[0]["ddp_type"] == "DistributedDataParallel"
    # Reference: rank 0's initial weights (DDP broadcasts them), full batch, same optimizer.
    model = _make_model(seed=100)
    opt = _make_opt(model)
    loss_fn = SupConLoss(temperature=0.1)
    ref_losses = []
    for step in range(STEPS):
        loss = loss_fn(model(inputs["ddp_x"][step]), inputs["ddp_y"][step])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ref_losses.append(loss.detach())
    start = _make_model(seed=100).state_dict()
    ref_state = model.state_dict()
    for res in ranks:
        torch.testing.assert_close(res["ddp_losses"], torch.stack(ref_losses), rtol=TOL, atol=TOL)
        for k, v in ref_state.items():
            assert (v - start[k]).abs().max() > 1e-3  # the steps really moved the weights
            torch.testing.assert_close(res["ddp_state"][k], v, rtol=TOL, atol=TOL)
        assert res["ddp_in_sync"]
        assert not res["ddp_in_sync_after_desync"]
    for k in ref_state:
        assert torch.equal(ranks[0]["ddp_state"][k], ranks[1]["ddp_state"][k])
    assert ranks[0]["fingerprint"] == ranks[1]["fingerprint"]
    assert ranks[0]["fingerprints"] == ranks[1]["fingerprints"] == [ranks[0]["fingerprint"]] * 2


# --------------------------------------------------------------------------- single process
_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def clean_env(monkeypatch):
    for k in _TORCHRUN_VARS:
        monkeypatch.delenv(k, raising=False)
    yield monkeypatch
    D.cleanup()


def test_not_launched_distributed_is_a_no_op(clean_env):
    info = D.init_distributed("cpu")
    assert info == D.DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    assert not info.enabled and info.is_main
    assert (D.rank(), D.world_size(), D.is_main(), D.is_enabled()) == (0, 1, True, False)
    model = nn.Linear(3, 2)
    assert D.wrap_ddp(model, info) is model
    x = torch.randn(4, 3, requires_grad=True)
    assert D.gather_with_grad(x) is x
    assert D.broadcast_object([1, 2]) == [1, 2]
    D.barrier()
    assert D.replicas_in_sync(model)
    clean_env.setenv("WORLD_SIZE", "1")  # torchrun --nproc_per_node 1
    assert not D.init_distributed("cpu").enabled


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"WORLD_SIZE": "two"}, "WORLD_SIZE"),
        ({"WORLD_SIZE": "0"}, "WORLD_SIZE"),
        ({"WORLD_SIZE": "2"}, "RANK"),
        ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK"),
        ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "x"}, "LOCAL_RANK"),
        ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_PORT": "1"}, "MASTER_ADDR"),
    ],
)
def test_bad_torchrun_environment_is_a_user_error(clean_env, env, field):
    for k, v in env.items():
        clean_env.setenv(k, v)
    with pytest.raises(UserError, match=f"environment variable {field}"):
        D.init_distributed("cpu")


def test_state_fingerprint_sees_one_changed_value():
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    b = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    b.load_state_dict(a.state_dict())
    assert D.state_fingerprint(a) == D.state_fingerprint(b)
    with torch.no_grad():
        b[0].weight[1, 2] = torch.nextafter(b[0].weight[1, 2], torch.tensor(2.0))
    assert D.state_fingerprint(a) != D.state_fingerprint(b)
    b.load_state_dict(a.state_dict())
    b[1].num_batches_tracked += 1  # buffers count when asked
    assert D.state_fingerprint(a) != D.state_fingerprint(b)
    assert D.state_fingerprint(a, buffers=False) == D.state_fingerprint(b, buffers=False)
