"""Soak: a grid of 22 tiny CPU runs with injected faults (docs/design.md §8, issue 8 item 5).

Faults:
- ``diverge``: a CE student with lr 1e6 (the loss turns non-finite within a few steps);
- ``bad_teacher``: a KD student whose teacher's ``model.pt`` is truncated;
- ``victim``: the ``supkd grid`` process is SIGKILLed while this run trains.

Expected: the report written while the grid is down lists the victim as unfinished; the
rerun of ``supkd grid`` resumes the victim from its checkpoint, skips what is done, finishes
every other run, exits 1 (a run failed), and its report shows the diverged run as
``NaN (diverged at step k)`` and the failed one with a message naming the teacher file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
METHODS = ["logit_mse", "norm_mse", "cosine", "gram", "supcon_kd", "hinton_kl"]

BASE = {
    "device": "cpu",
    "data": {"name": "digits", "subset": 96, "num_workers": 0, "val_fraction": 0.0},
    "model": {"name": "resnet18", "width": 4},
    "train": {
        "epochs": 1,
        "batch_size": 16,
        "eval_batch_size": 128,
        "steps_per_epoch": 2,
        "progress": False,
    },
}


def _spec(bad_teacher: Path) -> dict:
    return {
        "grid": "soak",
        "seeds": [0, 1, 2],
        "base": BASE,
        "runs": {
            "teacher": {
                "seeds": [0],
                "config": {"task": {"name": "ce"}},
                "meta": {"table": "table1", "role": "teacher", "kind": "ce"},
            },
            # Long enough (16 steps, a checkpoint after each) to be killed mid-run.
            "victim": {
                "seeds": [0],
                "config": {
                    "train": {"epochs": 2, "steps_per_epoch": 8, "checkpoint_every_steps": 1}
                },
            },
            "kd_{method}": {
                "matrix": {"method": METHODS},
                "config": {
                    "task": {
                        "name": "distill",
                        "teacher": "${run:teacher@0}",
                        "loss": "${method}",
                        "alpha": 1.0,
                    }
                },
                "meta": {"table": "table2", "method": "${method}", "teacher_kind": "ce"},
            },
            "diverge": {
                "seeds": [0],
                "config": {"optim": {"lr": 1.0e6}, "train": {"steps_per_epoch": 6}},
                "meta": {"table": "table1", "role": "student", "kind": "ce"},
            },
            "bad_teacher": {
                "seeds": [0],
                "config": {"task": {"name": "distill", "teacher": str(bad_teacher)}},
                "meta": {"table": "table2", "method": "supcon_kd", "teacher_kind": "supcon"},
            },
        },
    }


def _env() -> dict[str, str]:
    # One intra-op thread per process: no OpenMP spin-waiting on CI's shared cores.
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _supkd(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "supkd", *args],
        cwd=REPO,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _corrupt_teacher(folder: Path) -> Path:
    from supkd.models import create_model
    from supkd.train.checkpoint import save_model

    folder.mkdir()
    save_model(folder / "model.pt", create_model("resnet18", width=4, in_channels=1), {})
    data = (folder / "model.pt").read_bytes()
    (folder / "model.pt").write_bytes(data[: len(data) // 3])
    return folder


def test_grid_with_faults_finishes_every_other_run(tmp_path):
    spec_path = tmp_path / "soak.yaml"
    spec_path.write_text(yaml.safe_dump(_spec(_corrupt_teacher(tmp_path / "broken_teacher"))))
    runs = tmp_path / "runs"

    # 1. Start the grid; SIGKILL it while the victim run is half-way.
    grid = _supkd("grid", str(spec_path), "--out", str(runs))
    victim_ckpt = runs / "victim-s0" / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 300
    while not victim_ckpt.exists():
        assert grid.poll() is None, grid.communicate()
        assert time.monotonic() < deadline, "the victim run never started"
        time.sleep(0.002)
    grid.send_signal(signal.SIGKILL)
    grid.communicate(timeout=60)
    assert not (runs / "victim-s0" / "result.json").exists()

    # 2. A report built while the grid is down shows the victim as unfinished.
    rep = _supkd("report", str(runs), "--out", str(tmp_path / "report_down"), "--quiet")
    _, err = rep.communicate(timeout=120)
    assert rep.returncode == 0, err
    down = (tmp_path / "report_down" / "report.md").read_text()
    assert "victim-s0" in down and "unfinished" in down, down

    # 3. Rerun: resumes the victim, skips the teacher, finishes the rest despite the faults.
    grid = _supkd("grid", str(spec_path), "--out", str(runs))
    out, err = grid.communicate(timeout=600)
    assert grid.returncode == 1, (out, err)  # a run failed (the corrupt teacher)
    assert "Traceback" not in err, err
    assert "victim-s0 (resuming from its checkpoint)" in out, out

    results = {
        d.name: json.loads((d / "result.json").read_text())
        for d in runs.iterdir()
        if (d / "result.json").is_file()
    }
    assert len(results) == 22, sorted(results)
    others = {
        k: v["status"] for k, v in results.items() if k not in ("diverge-s0", "bad_teacher-s0")
    }
    assert len(others) == 20 and set(others.values()) == {"completed"}, others
    assert results["diverge-s0"]["status"] == "diverged"
    step = results["diverge-s0"]["diverged_step"]
    assert isinstance(step, int) and 1 <= step <= 6
    assert results["bad_teacher-s0"]["status"] == "failed"
    assert "model.pt" in results["bad_teacher-s0"]["error"]

    # 4. The report shows each fault.
    report = (runs / "report" / "report.md").read_text()
    assert f"NaN (diverged at step {step})" in report, report
    problems = report[report.index("## Runs that did not complete") :]
    assert "diverge-s0" in problems and f"diverged at step {step}" in problems
    assert "bad_teacher-s0" in problems and "failed" in problems
    assert str(tmp_path / "broken_teacher") in problems
    assert "victim-s0" not in problems  # resumed and completed
