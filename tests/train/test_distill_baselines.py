"""The distill task's parts for the KD baselines: forward_intermediates stages as the
representation, the α warm-up, and a loss with learned parts and per-sample state (CRD)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from supkd.cli import main
from supkd.data import Batch, build_data, make_loader
from supkd.errors import CheckpointError, ConfigError
from supkd.losses import build_loss
from supkd.train import build_task, run
from supkd.train.checkpoint import load_checkpoint
from supkd.train.tasks import distill_task_from_modules


def _task(cfg):
    bundle = build_data(cfg.data, seed=0)
    return build_task(cfg, bundle, "cpu"), bundle


def _batch(bundle):
    loader = make_loader(bundle, "train", 16, train=True, device="cpu", seed=0, num_workers=0)
    return next(iter(loader))


def test_a_stage_of_forward_intermediates_is_the_representation(tiny, teacher_runs):
    cfg = tiny("task.name=distill", f"task.teacher={teacher_runs['ce']}", "task.loss=sp",
               "task.representation=layer3")
    task, bundle = _task(cfg)
    # 8x8 digits: layer3 is 2x2; width-4 student 16 channels, width-8 teacher 32.
    assert task.widths == (16 * 4, 32 * 4) and task.adapter is None
    batch = _batch(bundle)
    task.eval()  # BatchNorm statistics fixed, so the recomputation below is exact
    out = task(batch)
    z_s = task.model.forward_intermediates(batch.x)["layer3"].flatten(1)
    z_t = task.teacher.forward_intermediates(batch.x)["layer3"].flatten(1)
    assert out["kd"].item() == pytest.approx(build_loss("sp")(z_s, z_t).item(), rel=1e-6)
    assert out["ce"].item() == pytest.approx(
        torch.nn.functional.cross_entropy(task.model(batch.x).logits, batch.y).item(), rel=1e-6)
    task.train()
    task(batch)["loss"].backward()
    assert all(p.grad is not None for p in task.model.encoder.layer3.parameters())
    # An element-wise loss on a stage map gets the usual adapter (flattened widths).
    task2, _ = _task(tiny("task.name=distill", f"task.teacher={teacher_runs['ce']}",
                          "task.loss=logit_mse", "task.representation=layer4"))
    assert task2.adapter.weight.shape == (64, 32)


def test_an_unknown_stage_lists_the_valid_names(tiny, teacher_runs):
    with pytest.raises(ConfigError, match=r"task\.representation.*layer4.*got 'layer9'"):
        _task(tiny("task.name=distill", f"task.teacher={teacher_runs['ce']}",
                   "task.loss=sp", "task.representation=layer9"))
    plain = torch.nn.Linear(4, 3)  # a user module without forward_intermediates
    with pytest.raises(ConfigError, match="forward_intermediates"):
        distill_task_from_modules(plain, torch.nn.Linear(4, 3), torch.zeros(2, 4), loss="sp",
                                  representation="layer4")


def test_alpha_warm_up_is_linear_per_step(tiny, teacher_runs, tmp_path):
    cfg = tiny("task.name=distill", f"task.teacher={teacher_runs['ce']}", "task.loss=logit_mse",
               "task.alpha=2.0", "task.alpha_warmup_epochs=2", "train.epochs=3")
    res = run(cfg, tmp_path / "r", quiet=True)
    per_epoch = res["steps"] // res["epochs"]
    lines = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    for epoch, line in enumerate(lines):
        # Step j of epoch e ends at e + j / n epochs: weight 2 * min(1, that / 2).
        weights = [2.0 * min(1.0, (epoch + j / per_epoch) / 2.0) for j in range(1, per_epoch + 1)]
        assert line["train_kd_weight"] == pytest.approx(sum(weights) / per_epoch, rel=1e-6)
    assert lines[-1]["train_kd_weight"] == pytest.approx(2.0)
    # The step's loss is Eq. 6 with the warmed-up weight; without warm-up, alpha itself and
    # no extra part (the metrics of existing runs are unchanged).
    task, bundle = _task(cfg)
    task.set_progress(0.5)
    out = task(_batch(bundle))
    assert torch.allclose(out["loss"].detach(), out["ce"] + 0.5 * out["kd"])
    plain, _ = _task(tiny("task.name=distill", f"task.teacher={teacher_runs['ce']}",
                          "task.loss=logit_mse", "task.alpha=2.0"))
    plain.set_progress(0.5)
    out = plain(_batch(bundle))
    assert "kd_weight" not in out
    assert torch.allclose(out["loss"].detach(), out["ce"] + 2.0 * out["kd"])


def test_crd_state_belongs_to_the_task(tiny, teacher_runs):
    cfg = tiny("task.name=distill", f"task.teacher={teacher_runs['ce']}", "task.loss=crd",
               "task.representation=embedding", "task.loss_args={num_negatives: 20}")
    task, bundle = _task(cfg)
    crd = task.criterion
    assert crd.memory_s.shape == (len(bundle.train), 128) and task.adapter is None
    assert (crd.embed_s.in_features, crd.embed_t.in_features) == (32, 64)
    trainable = {id(p) for p in task.trainable_parameters()}
    assert {id(crd.embed_s.weight), id(crd.embed_t.bias)} <= trainable
    assert not any("embed" in k for k in task.model.state_dict())  # not the student's
    batch = _batch(bundle)
    before = crd.memory_t.clone()
    task.train()
    out = task(batch)
    out["loss"].backward()
    assert torch.isfinite(out["kd"]) and crd.embed_t.weight.grad is not None
    changed = (crd.memory_t != before).any(dim=1)
    assert set(torch.nonzero(changed).flatten().tolist()) == set(batch.index.tolist())
    state = task.extra_state()["loss"]
    assert {"embed_s.weight", "embed_t.bias", "_extra_state"} <= set(state)
    assert torch.equal(state["_extra_state"]["memory_t"], crd.memory_t)
    # Another task restores it; one without it in the checkpoint is refused.
    other, _ = _task(cfg)
    other.load_extra_state(task.extra_state())
    assert torch.equal(other.criterion.memory_s, crd.memory_s)
    assert other.criterion.steps == 1
    with pytest.raises(CheckpointError, match="memory bank"):
        other.load_extra_state({"widths": [32, 64]})
    with pytest.raises(ConfigError, match="index"):
        task(Batch(batch.x, batch.y))


def test_a_crd_run_trains_and_records_its_parts(tiny, teacher_runs, tmp_path):
    cfg = tiny("task.name=distill", f"task.teacher={teacher_runs['linear']}", "task.loss=crd",
               "task.representation=embedding", "train.epochs=2")
    res = run(cfg, tmp_path / "crd", quiet=True)
    assert res["status"] == "completed" and res["test_acc"] is not None
    ck = load_checkpoint(tmp_path / "crd" / "checkpoints" / "last.pt")
    assert ck["task_state"]["loss"]["_extra_state"]["steps"] == res["steps"]
    model = torch.load(tmp_path / "crd" / "model.pt", weights_only=True)["state_dict"]
    assert not any("embed" in k for k in model)


@pytest.mark.parametrize(("loss", "extra"), [
    ("dkd", ["task.alpha_warmup_epochs=1"]),
    ("dist", []),
    ("sp", ["task.representation=layer4"]),
    ("rkd", ["task.representation=embedding"]),
    ("crd", ["task.representation=embedding"]),
    ("hinton_kl", ["task.loss_args={standardize: true}"]),
    ("supcon_kd", ["task.loss_args={positives: instance}"]),
])
def test_every_baseline_trains_in_supkd_train(tiny, teacher_runs, tmp_path, capsys, loss, extra):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(tiny("name=cli_kd").to_dict()))
    out = tmp_path / "out"
    args = ["train", str(cfg), "task.name=distill", f"task.teacher={teacher_runs['linear']}",
            f"task.loss={loss}", *extra, "train.steps_per_epoch=2", "--out", str(out), "--quiet"]
    assert main(args) == 0, capsys.readouterr().err
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "completed" and result["steps"] == 2


def test_a_bad_stage_name_exits_2_with_one_line(tiny, teacher_runs, tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(tiny("name=cli_kd").to_dict()))
    code = main(["train", str(cfg), "task.name=distill", f"task.teacher={teacher_runs['ce']}",
                 "task.loss=sp", "task.representation=layer7", "--out", str(tmp_path / "o"),
                 "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert len([x for x in err.splitlines() if x.strip()]) == 1 and "layer7" in err
