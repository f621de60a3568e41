"""A reduced `supkd demo` end to end with the real engine (1 seed, 1 epoch of 2 steps, a
subset of the runs): grid -> run directories -> CKA -> report.md with Fig. 2."""

from __future__ import annotations

import io
import json

import pytest

from supkd.experiments.demo import run_demo

TINY = {"config": {"train": {"epochs": 1, "steps_per_epoch": 2}}}
KEEP = ("supcon_teacher", "supcon_teacher_linear", "kd_supcon_kd", "ablation_none")


@pytest.mark.slow
def test_reduced_demo_end_to_end(tmp_path):
    out = io.StringIO()
    res, rep = run_demo(
        tmp_path / "demo", jobs=1, seeds=1, stream=out,
        overrides={"final": TINY, "tune": {"config": TINY["config"]}},
        only=lambda r: r.cell in KEEP,
    )
    text = out.getvalue()
    assert res.statuses["supcon_teacher_linear-s0"] == "completed", res.problems
    assert res.statuses["kd_supcon_kd-s0"] == "completed", res.problems
    assert res.statuses["ablation_none-s0"] in ("completed", "diverged")
    assert res.statuses["kd_supcon_kd-s0/cka"] == "completed", res.problems
    result = json.loads((tmp_path / "demo" / "kd_supcon_kd-s0" / "result.json").read_text())
    assert result["meta"]["alpha"] in (0.003, 0.01) and result["meta"]["stage"] == "final"
    md = rep.markdown_path.read_text()
    assert (rep.out_dir / "fig2_cka.png").stat().st_size > 1000
    assert "fig2_cka.png" in md and "Table II" in md and "Table V" in md
    assert "α for kd_supcon_kd" in text and "report: " in text and "[" in text
    # Run again: nothing is redone.
    res2, _ = run_demo(tmp_path / "demo", jobs=1, seeds=1, stream=None,
                       overrides={"final": TINY, "tune": {"config": TINY["config"]}},
                       only=lambda r: r.cell in KEEP)
    assert set(res2.statuses.values()) <= {"cached", "diverged"}
