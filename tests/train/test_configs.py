"""The presets' recipes, read where they are stated once: the grids' resolved run configs
(what ``supkd grid`` and ``supkd train GRID.yaml --run NAME`` train) validate, and the paper
preset carries DESIGN.md §5's budgets. Every YAML in configs/ validates."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from supkd.experiments.grid import load_grid, plan_grid, read_grid_yaml
from supkd.losses import LOSSES
from supkd.train.checks import load_run_config
from supkd.vocab import RunKind

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
RUN_KINDS = ("ce_teacher", "supcon_teacher", "supcon_teacher_linear", "ce_student",
             "supcon_student", "supcon_student_linear", "kd_logit_mse_from_ce")


def _runs(grid: str, tmp_path: Path) -> dict:
    """Seed-0 test-set run configs of a grid by cell, α set to 1 where it is tuned."""
    plan = plan_grid(load_grid(CONFIGS / grid), tmp_path)
    out = {}
    for r in plan:
        if r.stage == "final" and r.seed == 0:
            cfg = yaml.safe_load(yaml.safe_dump(r.config).replace("${alpha}", "1.0"))
            if cfg["data"].get("name") == "imagefolder":
                cfg["data"]["root"] = str(tmp_path)
            out[r.cell] = load_run_config(cfg)
    return out


@pytest.mark.parametrize("grid", ["paper/cifar10.yaml", "paper/imagenet.yaml",
                                  "fast/cifar10.yaml"])
def test_the_presets_are_complete(grid, tmp_path):
    runs = _runs(grid, tmp_path)
    baselines = _runs(grid.replace(".yaml", "_baselines.yaml"), tmp_path)
    for kind in (*RUN_KINDS, *(f"kd_{m}" for m in LOSSES if LOSSES[m].kd_table_row)):
        assert kind in runs, (grid, kind)
    methods = {c.task.loss for c in baselines.values() if c.task.name == "distill"}
    assert set(LOSSES) <= methods, (grid, set(LOSSES) - methods)


@pytest.mark.slow
def test_every_yaml_in_configs_is_a_valid_grid_or_run_config(tmp_path):
    # Grid specs expand to run configs that validate; any other YAML is a run config.
    seen = 0
    for path in sorted(CONFIGS.rglob("*.yaml")):
        raw = read_grid_yaml(path)
        if "runs" not in raw:
            assert load_run_config(path).name, path
            continue
        for r in plan_grid(load_grid(path), tmp_path):
            if r.kind == RunKind.CKA:
                continue
            cfg = yaml.safe_load(yaml.safe_dump(r.config).replace("${alpha}", "1.0"))
            if cfg["data"].get("name") == "imagefolder":
                cfg["data"]["root"] = str(tmp_path)
            load_run_config(cfg)
            seen += 1
    assert seen > 1000  # the paper, fast and demo grids at least


def test_paper_budgets_follow_design_section_5(tmp_path):
    c10 = _runs("paper/cifar10.yaml", tmp_path)
    sup = c10["supcon_teacher"]
    assert (sup.train.epochs, sup.train.batch_size, sup.optim.lr) == (1000, 1024, 0.5)
    assert (sup.optim.weight_decay, sup.schedule.min_lr_factor) == (1e-4, 1e-3)
    assert sup.schedule.warmup_epochs == 10 and sup.task.temperature == 0.1
    # The SupContrast code's tau / 0.07 scaling, which its lr 0.5 assumes (SupConLoss docs);
    # the fast preset keeps no factor.
    assert sup.task.base_temperature == 0.07
    assert _runs("paper/imagenet.yaml", tmp_path)["supcon_teacher"].task.base_temperature == 0.07
    assert c10["supcon_student"].task.base_temperature == 0.07
    fast = _runs("fast/cifar10.yaml", tmp_path)
    assert fast["supcon_teacher"].task.base_temperature is None
    assert sup.model.name == "resnet50" and sup.model.projection_dim == 128
    lin = c10["supcon_teacher_linear"]
    assert (lin.train.epochs, lin.train.batch_size, lin.optim.lr) == (100, 512, 5.0)
    assert lin.schedule.milestones == [60, 75, 90] and lin.schedule.gamma == 0.2
    ce = c10["ce_teacher"]
    assert (ce.train.epochs, ce.train.batch_size, ce.optim.lr) == (500, 1024, 0.8)
    students = {k: v for k, v in c10.items() if k == "ce_student" or k.startswith("kd_")}
    students.update(_runs("paper/cifar10_baselines.yaml", tmp_path))
    for name, c in students.items():
        if not (name == "ce_student" or name.startswith(("kd_", "base_"))):
            continue
        assert (c.train.epochs, c.train.batch_size, c.optim.lr) == (240, 64, 0.05), name
        assert c.schedule.milestones == [150, 180, 210] and c.optim.weight_decay == 5e-4
        assert c.model.name == "resnet18" and c.model.stem == "cifar"
    assert c10["kd_hinton_kl"].task.loss_args == {}  # T = 4 is the loss default
    assert c10["kd_supcon_kd"].task.loss_args == {"normalize_student": True,
                                                  "normalize_teacher": False}
    imagenet = _runs("paper/imagenet.yaml", tmp_path)
    for cell, c in imagenet.items():
        if cell.startswith("kd_"):
            assert (c.train.epochs, c.train.batch_size, c.optim.lr) == (100, 256, 0.1)
            assert c.schedule.milestones == [30, 60, 90] and c.model.name == "resnet34"
            assert c.task.loss == cell.removeprefix("kd_").removesuffix("_from_ce")
