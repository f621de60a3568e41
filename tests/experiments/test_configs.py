"""The shipped grid specs parse, and every run they expand to is a valid run config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from supkd.experiments.demo import demo_spec
from supkd.experiments.grid import load_grid, plan_grid, read_grid_yaml
from supkd.train.checks import load_run_config
from supkd.vocab import RunKind

REPO = Path(__file__).resolve().parents[2]
GRIDS = ["configs/demo.yaml", "configs/paper/cifar10.yaml", "configs/paper/imagenet.yaml",
         "configs/paper/ablation.yaml", "configs/fast/cifar10.yaml",
         "configs/paper/cifar10_baselines.yaml", "configs/fast/cifar10_baselines.yaml",
         "configs/paper/imagenet_baselines.yaml"]
BASELINE_GRIDS = ["configs/paper/cifar10_baselines.yaml", "configs/fast/cifar10_baselines.yaml",
                  "configs/paper/imagenet_baselines.yaml", "configs/demo_baselines.yaml"]
# (method, variant) of every KD baseline of issue 14.
BASELINES = {("dkd", None), ("dist", None), ("sp", None), ("rkd", None), ("crd", None),
             ("hinton_kl", "logit standardization"), ("supcon_kd", "instance positives")}


def _validate_all(spec, tmp_path):
    plan = plan_grid(spec, tmp_path)
    for r in plan:
        if r.kind == RunKind.CKA:
            continue
        cfg = json.loads(json.dumps(r.config).replace('"${alpha}"', "1.0"))
        if cfg["data"].get("name") == "imagefolder":
            cfg["data"]["root"] = str(tmp_path)
        load_run_config(cfg)  # raises ConfigError on any bad key or value
    return plan


@pytest.mark.parametrize("path", GRIDS)
def test_grid_specs_expand_to_valid_run_configs(path, tmp_path):
    plan = _validate_all(load_grid(REPO / path), tmp_path)
    tables = set()
    for r in plan:
        t = r.config.get("meta", {}).get("table")
        tables.update([t] if isinstance(t, str) else t or [])
    if "imagenet" in path or "ablation" in path:
        assert {"table3", "table4"} <= tables
    else:
        assert {"table1", "table2", "table5"} <= tables
    if "ablation" in path:
        assert "table5" in tables


def test_demo_yaml_in_configs_is_the_packaged_one():
    # One copy of the demo spec: the packaged file (what `supkd demo` runs); configs/demo.yaml
    # is a plain file that extends it and adds nothing, so both plan the same runs.
    path = REPO / "configs" / "demo.yaml"
    assert not path.is_symlink()
    raw = yaml.safe_load(path.read_text())
    assert raw == {"extends": "../src/supkd/configs/demo.yaml"}
    from_configs = plan_grid(load_grid(path), "/runs")
    packaged = plan_grid(demo_spec(seeds=2), "/runs")
    assert [(r.name, r.config, r.deps, r.soft_deps) for r in from_configs] == [
        (r.name, r.config, r.deps, r.soft_deps) for r in packaged]


@pytest.mark.parametrize("preset", ["paper", "fast"])
def test_each_recipe_is_stated_once_in_a_grid(preset):
    # No per-run copies of a grid's runs: `supkd train GRID.yaml --run NAME` trains one run
    # with the config the grid resolves for it (tests/experiments/test_grid_run.py).
    for path in sorted((REPO / "configs" / preset).glob("*.yaml")):
        assert "runs" in read_grid_yaml(path), f"{path.name} is not a grid spec"


def test_the_paper_and_fast_baselines_grids_differ_only_in_schedules(tmp_path):
    paper = {r.name: r.config for r in plan_grid(
        load_grid(REPO / "configs/paper/cifar10_baselines.yaml"), tmp_path)}
    fast = {r.name: r.config for r in plan_grid(
        load_grid(REPO / "configs/fast/cifar10_baselines.yaml"), tmp_path)}
    assert paper.keys() == fast.keys()
    p, f = paper["base_dkd_from_supcon-s0"], fast["base_dkd_from_supcon-s0"]
    assert p["task"]["alpha_warmup_epochs"] == 20 and f["task"]["alpha_warmup_epochs"] == 5
    assert p["train"]["epochs"] == 240 and f["train"]["epochs"] == 60
    assert {k: v for k, v in p["task"].items() if k != "alpha_warmup_epochs"} == {
        k: v for k, v in f["task"].items() if k != "alpha_warmup_epochs"}


def test_demo_covers_the_protocol(tmp_path):
    plan = _validate_all(demo_spec(seeds=2), tmp_path)
    metas = [r.config.get("meta", {}) for r in plan if r.stage == "final"]
    methods = {m.get("method") for m in metas if m.get("teacher_kind") == "supcon"
               and "table2" in m.get("table", [])}
    # The paper's five losses (Hinton KD, not in the paper, is left out to fit two minutes).
    assert methods == {"logit_mse", "norm_mse", "cosine", "gram", "supcon_kd"}
    assert {m.get("placement") for m in metas if m.get("placement")} == {
        "none", "teacher_only", "student_only", "both"}
    assert any(m.get("teacher_kind") == "ce" for m in metas)
    assert {m["seed"] for m in metas} == {0, 1}
    assert sum(r.kind == RunKind.CKA for r in plan) == 10
    assert sum(r.stage == "tune" for r in plan) == 10
    by_cell = {r.cell: r.config for r in plan if r.stage == "final" and r.seed == 0}
    # DESIGN.md §5's SupCon : CE epoch ratio (1000 : 500) for teachers and students.
    for kind in ("teacher", "student"):
        assert (by_cell[f"supcon_{kind}"]["train"]["epochs"]
                == 2 * by_cell[f"ce_{kind}"]["train"]["epochs"])
    # Gram KD on row-normalized features (the raw Gram of logits scales with |z|^4).
    assert by_cell["kd_gram"]["task"]["loss_args"] == {"normalize": True}


@pytest.mark.parametrize("path", BASELINE_GRIDS)
def test_baseline_grids_run_every_baseline_from_both_teachers(path, tmp_path):
    plan = _validate_all(load_grid(REPO / path), tmp_path)
    finals = [r.config for r in plan if r.stage == "final"
              and (r.config["meta"].get("method"), r.config["meta"].get("variant")) in BASELINES]
    seen = {(c["meta"]["method"], c["meta"].get("variant"), c["meta"]["teacher_kind"])
            for c in finals}
    for method, variant in BASELINES:
        for teacher in ("ce", "supcon"):
            assert (method, variant, teacher) in seen, (method, variant, teacher)
    for c in finals:
        meta, task = c["meta"], c["task"]
        assert task["loss"] == meta["method"]
        assert meta["table"] in ("table2", "table4")  # tested against its logit-MSE Baseline
        assert task["teacher"].endswith(("ce_teacher-s0", "supcon_teacher_linear-s0")
                                        if "demo" in path else
                                        (f"ce_teacher-s{c['seed']}",
                                         f"supcon_teacher_linear-s{c['seed']}"))
        if meta.get("variant") == "logit standardization":
            assert task["loss_args"]["standardize"] is True
        if meta.get("variant") == "instance positives":
            assert task["loss_args"]["positives"] == "instance"
        if meta["method"] in ("sp", "rkd", "crd"):
            assert task["representation"] in ("layer4", "embedding")
        if meta["method"] == "dkd":
            assert task["alpha_warmup_epochs"] > 0
    # α is tuned on the validation split (the demo: where its scale is unknown on digits).
    tuned = {r.config["meta"]["method"] for r in plan if r.stage == "tune"
             and (r.config["meta"]["method"], r.config["meta"].get("variant")) in BASELINES}
    assert "dkd" in tuned
    if "demo" not in path:
        assert {m for m, _ in BASELINES} <= tuned


def test_supcon_recipes_keep_the_public_codes_gradient_scale(tmp_path):
    # The paper preset's SupCon runs take lr 0.5 from the SupContrast code, which scales its
    # loss by tau / 0.07; the fast preset and the demo keep no factor (SupConLoss docs).
    want = {"configs/paper/cifar10.yaml": 0.07, "configs/paper/imagenet.yaml": 0.07,
            "configs/paper/ablation.yaml": 0.07, "configs/fast/cifar10.yaml": None,
            "configs/demo.yaml": None}
    for path, value in want.items():
        plan = plan_grid(load_grid(REPO / path), tmp_path)
        sup = [r.config for r in plan if r.config.get("task", {}).get("name") == "supcon"]
        assert sup, path
        for c in sup:
            assert c["task"].get("base_temperature") == value, (path, c["name"])
