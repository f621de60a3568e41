"""The feature-distillation baselines of issue 22 in the baseline grids: every method from
both teachers, under its registered loss name, each run config valid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from supkd.experiments.grid import load_grid, plan_grid
from supkd.losses import LOSSES
from supkd.train.checks import load_run_config

REPO = Path(__file__).resolve().parents[2]
FEATURE = ["fitnet", "at", "nst", "pkt", "kdsvd", "vid", "ofd", "reviewkd", "cc", "skd"]


@pytest.mark.parametrize("path", ["configs/demo_baselines.yaml",
                                  "configs/fast/cifar10_baselines.yaml",
                                  "configs/paper/cifar10_baselines.yaml",
                                  "configs/paper/imagenet_baselines.yaml"])
def test_every_feature_method_runs_from_both_teachers(path, tmp_path):
    plan = plan_grid(load_grid(REPO / path), tmp_path)
    seen = set()
    for r in plan:
        meta = r.config.get("meta", {})
        if r.stage != "final" or meta.get("method") not in FEATURE:
            continue
        raw = json.loads(json.dumps(r.config).replace('"${alpha}"', "1.0"))
        if raw["data"].get("name") == "imagefolder":
            raw["data"]["root"] = str(tmp_path)
        cfg = load_run_config(raw)
        assert cfg.task.loss == meta["method"] and not LOSSES[cfg.task.loss].kd_table_row
        if cfg.task.loss in ("pkt", "cc"):  # the penultimate features, as their code
            assert cfg.task.representation == "embedding"
        if cfg.task.loss == "reviewkd":
            assert cfg.task.alpha_warmup_epochs > 0
        seen.add((meta["method"], meta["teacher_kind"]))
    assert seen == {(m, t) for m in FEATURE for t in ("ce", "supcon")}
