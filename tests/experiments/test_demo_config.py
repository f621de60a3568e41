"""The demo's augmentation suits 8x8 one-channel digits: every training run of its plan
(teachers, students, linear stages, KD and tuning runs, both seeds) trains without flips and
with the milder SupCon views, and its data section is a valid DataConfig."""

from __future__ import annotations

from supkd.data import DataConfig
from supkd.data.transforms import SupconRecipe
from supkd.experiments.demo import demo_spec
from supkd.experiments.grid import plan_grid
from supkd.vocab import RunKind


def test_every_demo_run_trains_without_flips_and_with_mild_supcon_views(tmp_path) -> None:
    runs = [r for r in plan_grid(demo_spec(seeds=2), tmp_path) if r.kind != RunKind.CKA]
    assert {r.seed for r in runs} == {0, 1}
    assert {r.stage for r in runs} == {"final", "tune"}
    cells = {r.cell for r in runs}
    assert {"ce_teacher", "supcon_teacher", "supcon_student", "kd_supcon_kd"} <= cells
    for run in runs:
        cfg = DataConfig(**run.config["data"])
        assert cfg.name == "digits" and cfg.flip is False, run.name
        recipe = SupconRecipe.from_config(cfg)
        assert recipe == SupconRecipe(scale=(0.5, 1.0), flip=False, jitter=0.1), run.name
    # α is still tuned on a validation split and the test-set runs use the whole train split.
    assert all(DataConfig(**r.config["data"]).val_fraction > 0 for r in runs if r.stage == "tune")
    assert all(DataConfig(**r.config["data"]).val_fraction == 0 for r in runs if r.stage == "final")
