"""The KD benchmark's grids (configs/cifar100, configs/imagenet/kd_zoo.yaml): what they
plan, checked against the published recipes, and the grid's ``teachers:`` switch."""

from __future__ import annotations

from pathlib import Path

import pytest

from supkd.cli import main
from supkd.errors import ConfigError
from supkd.experiments.grid.plan import plan_grid
from supkd.experiments.grid.spec import load_grid, parse_grid
from supkd.train import load_run_config

ROOT = Path(__file__).resolve().parents[2]
CIFAR = ROOT / "configs" / "cifar100"
PAIRS = [
    ("resnet56", "resnet20"), ("resnet110", "resnet32"), ("resnet110", "resnet20"),
    ("resnet32x4", "resnet8x4"), ("wrn_40_2", "wrn_16_2"), ("wrn_40_2", "wrn_40_1"),
    ("vgg13", "vgg8"), ("vgg13", "MobileNetV2"), ("ResNet50", "MobileNetV2"),
    ("ResNet50", "vgg8"), ("resnet32x4", "ShuffleV1"), ("resnet32x4", "ShuffleV2"),
    ("wrn_40_2", "ShuffleV1"),
]
METHODS = {"ce", "hinton_kl", "dkd", "crd", "rkd", "sp"}
# mdistiller's configs/cifar100/dkd/<pair>.yaml (beta 8 where it has none)
DKD_BETA = {("resnet56", "resnet20"): 2.0, ("resnet110", "resnet32"): 2.0,
            ("wrn_40_2", "wrn_16_2"): 6.0, ("wrn_40_2", "wrn_40_1"): 6.0,
            ("vgg13", "vgg8"): 6.0, ("vgg13", "MobileNetV2"): 6.0}
MOBILE = {"MobileNetV2", "ShuffleV1", "ShuffleV2"}


def _final(grid: str) -> list:
    return [r for r in plan_grid(load_grid(CIFAR / grid), "/tmp/unused")
            if r.config["meta"].get("table") == "cifar100_kd"]


@pytest.mark.parametrize("grid", ["kd_zoo.yaml", "kd_zoo_imported.yaml", "kd_zoo_supcon.yaml"])
def test_dry_run_lists_the_13_pairs_times_the_methods(grid, tmp_path, capsys):
    code = main(["grid", str(CIFAR / grid), "--dry-run", "--out", str(tmp_path / "runs")])
    out = capsys.readouterr().out
    assert code == 0
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    for teacher, student in PAIRS:
        for prefix in ("ce", "dkd", *(f"kd-{{}}-{m}" for m in ("kd", "crd", "rkd", "sp"))):
            cell = (f"{prefix}-{teacher}-{student}" if "{}" not in prefix
                    else prefix.format(f"{teacher}-{student}"))
            for seed in (0, 1, 2):
                assert f"{cell}-s{seed} " in out, cell
    cells = {(r.config["meta"]["teacher_arch"], r.config["meta"]["student_arch"],
              r.config["meta"]["method"]) for r in _final(grid)}
    assert cells == {(t, s, m) for t, s in PAIRS for m in METHODS}


@pytest.mark.parametrize("grid", ["kd_zoo.yaml", "kd_zoo_imported.yaml", "kd_zoo_supcon.yaml"])
def test_every_run_config_is_valid_and_follows_the_recipe(grid):
    for r in _final(grid):
        cfg = load_run_config(r.config, [])
        meta = r.config["meta"]
        pair = (meta["teacher_arch"], meta["student_arch"])
        assert cfg.model.name == pair[1]
        assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.eval_every) == (240, 64, 1)
        assert cfg.optim.lr == (0.01 if pair[1] in MOBILE else 0.05)
        assert (cfg.optim.momentum, cfg.optim.weight_decay) == (0.9, 5e-4)
        assert (cfg.schedule.name, cfg.schedule.milestones, cfg.schedule.gamma) == \
            ("step", [150, 180, 210], 0.1)
        assert cfg.data.name == "cifar100" and cfg.data.val_fraction == 0.0
        assert meta["published"] == "cifar100" and meta["stage"] == "final"
        assert meta["teacher_kind"] == ("supcon" if "supcon" in grid else "ce")
        t = cfg.task
        if meta["method"] == "ce":
            assert t.name == "ce"
            continue
        assert t.name == "distill"
        if meta["method"] == "hinton_kl":
            assert (t.loss_args, t.ce_weight, t.alpha, t.representation) == \
                ({"temperature": 4}, 0.1, 0.9, "logits")
        elif meta["method"] == "dkd":
            assert t.loss_args == {"alpha": 1.0, "beta": DKD_BETA.get(pair, 8.0),
                                   "temperature": 4}
            assert (t.ce_weight, t.alpha, t.alpha_warmup_epochs) == (1.0, 1.0, 20)
        elif meta["method"] == "crd":
            assert t.representation == "embedding" and (t.ce_weight, t.alpha) == (1.0, 0.8)
            assert t.loss_args["num_negatives"] == 16384
        elif meta["method"] == "rkd":
            assert t.representation == "embedding" and t.alpha == 1.0
        elif meta["method"] == "sp":
            last = "layer4" if pair[1] in ("vgg8", "MobileNetV2") else "layer3"
            assert t.representation == last and t.alpha == 3000.0


def test_teachers_come_from_the_grid_imports_or_supcon():
    trained = {r.name: r for r in plan_grid(load_grid(CIFAR / "kd_zoo.yaml"), "/tmp/r")}
    kd = trained["kd-resnet32x4-resnet8x4-kd-s2"]
    assert kd.deps == ["teacher-resnet32x4-s0"]
    assert kd.config["task"]["teacher"] == "/tmp/r/teacher-resnet32x4-s0"
    teacher = trained["teacher-ResNet50-s0"]
    assert teacher.config["model"]["name"] == "ResNet50" and teacher.config["task"]["name"] == "ce"
    assert not any(n.startswith("teacher-") and not n.endswith("-s0") for n in trained)

    imported = {r.name: r for r in plan_grid(load_grid(CIFAR / "kd_zoo_imported.yaml"), "/r")}
    kd = imported["dkd-vgg13-MobileNetV2-s0"]
    assert kd.deps == [] and kd.config["task"]["teacher"] == "runs/teachers/vgg13"
    assert not any(n.startswith("teacher-") for n in imported)

    supcon = {r.name: r for r in plan_grid(load_grid(CIFAR / "kd_zoo_supcon.yaml"), "/r")}
    kd = supcon["kd-wrn_40_2-ShuffleV1-crd-s1"]
    assert kd.deps == ["supcon-linear-wrn_40_2-s0"]
    lin = supcon["supcon-linear-wrn_40_2-s0"]
    assert lin.deps == ["supcon-wrn_40_2-s0"] and lin.config["task"]["name"] == "linear"
    pre = load_run_config(supcon["supcon-wrn_40_2-s0"].config, [])
    assert pre.task.name == "supcon" and pre.model.projection_dim == 128
    assert not any(n.startswith("teacher-") for n in supcon)


def test_an_unknown_teacher_is_one_config_error():
    spec = parse_grid({"teachers": {"a": "runs/a"},
                       "runs": {"kd": {"config": {"task": {"name": "distill",
                                                           "teacher": "${teacher:b}"}}}}})
    with pytest.raises(ConfigError, match=r"\$\{teacher:b\}.*known: a"):
        plan_grid(spec, "/tmp/r")
    with pytest.raises(ConfigError, match=r"teachers\.a"):
        parse_grid({"teachers": {"a": 3}, "runs": {"x": {}}})


def test_imagenet_rows_use_mdistillers_recipe():
    runs = plan_grid(load_grid(ROOT / "configs" / "imagenet" / "kd_zoo.yaml"), "/r")
    seen = set()
    for r in runs:
        cfg = load_run_config(r.config, [])
        meta = r.config["meta"]
        seen.add((meta["teacher_arch"], meta["student_arch"], meta["method"]))
        assert meta["table"] == "imagenet_kd"
        assert (cfg.train.epochs, cfg.train.batch_size, cfg.optim.lr) == (100, 512, 0.2)
        assert cfg.schedule.milestones == [30, 60, 90] and cfg.optim.weight_decay == 1e-4
        if meta["method"] == "hinton_kl":
            assert (cfg.task.loss_args, cfg.task.ce_weight, cfg.task.alpha) == \
                ({"temperature": 1}, 0.5, 0.5)
        if meta["method"] == "dkd":
            beta = 0.5 if meta["student_arch"] == "ResNet18" else 2.0
            assert cfg.task.loss_args == {"alpha": 1.0, "beta": beta, "temperature": 1}
    assert seen == {(t, s, m) for t, s in (("ResNet34", "ResNet18"), ("ResNet50", "MobileNetV1"))
                    for m in ("ce", "hinton_kl", "dkd")}


def test_recipe_is_a_valid_run_config():
    cfg = load_run_config(str(CIFAR / "recipe.yaml"), ["model.name=ShuffleV1", "optim.lr=0.01"])
    assert cfg.model.name == "ShuffleV1" and cfg.train.epochs == 240


def test_the_miniature_plans_two_pairs_with_kd_dkd_crd():
    runs = plan_grid(load_grid(ROOT / "configs" / "demo_zoo.yaml"), "/r")
    assert len(runs) == 2 + 2 * 4 * 2  # teachers; 2 pairs x (CE, KD, DKD, CRD) x 2 seeds
    cells = set()
    for r in runs:
        cfg = load_run_config(r.config, [])
        assert cfg.data.name == "digits" and cfg.data.image_size == 8
        meta = r.config["meta"]
        if meta.get("table") == "cifar100_kd":
            cells.add((meta["teacher_arch"], meta["student_arch"], meta["method"]))
            if cfg.task.name == "distill":
                assert r.deps == [f"teacher-{meta['teacher_arch']}-s0"]
    assert cells == {(t, s, m) for t, s in (("resnet32x4", "resnet8x4"), ("wrn_40_2", "wrn_16_2"))
                     for m in ("ce", "hinton_kl", "dkd", "crd")}
