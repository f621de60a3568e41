"""A stand-in for ``supkd.train.run`` with the same run-directory format, so grid tests need
no training. Module level (picklable) so that ``--jobs 2`` worker processes can run it.

Behaviour comes from the run config's ``task`` section: ``acc`` (test accuracy base),
``diverge: true`` (ends diverged at step 7), ``fail: true`` (raises), ``die: true`` (kills
its own process with SIGKILL, as the OOM killer would: only for ``--jobs`` > 1), ``sleep: S``
(a long run: S seconds unless resumed; Ctrl-C/SIGINT saves a checkpoint, like the engine).
Validation accuracy
peaks at α = 1 (90 − |log10 α|) so the α choice is known. Every call is appended to the
file named by $SUPKD_FAKE_LOG; $SUPKD_FAKE_KILL_AT names a run that is "killed" after its
first checkpoint (KeyboardInterrupt), like Ctrl-C in the middle of a grid.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from pathlib import Path
from typing import Any

import yaml
from tests.helpers import write_fake_result

from supkd.utils.atomic import atomic_write_json, atomic_write_text


def fake_run(config: dict[str, Any], run_dir: Path, resume: bool) -> dict[str, Any]:
    run_dir = Path(run_dir)
    name = config["name"]
    with open(os.environ["SUPKD_FAKE_LOG"], "a") as fh:
        fh.write(json.dumps({"name": name, "resume": resume}) + "\n")
    task = config.get("task", {})
    for key in ("teacher", "encoder"):
        if task.get(key):  # dependency order: the teacher must be complete already
            res = json.loads((Path(task[key]) / "result.json").read_text())
            assert res["status"] == "completed", (name, key)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config))
    if task.get("sleep") and not resume:
        deadline = time.monotonic() + float(task["sleep"])
        try:
            while time.monotonic() < deadline:
                time.sleep(0.05)
        except KeyboardInterrupt:
            (run_dir / "checkpoints").mkdir(exist_ok=True)
            (run_dir / "checkpoints" / "last.pt").write_bytes(b"checkpoint")
            raise
    if os.environ.get("SUPKD_FAKE_KILL_AT") == name:
        (run_dir / "checkpoints").mkdir(exist_ok=True)
        (run_dir / "checkpoints" / "last.pt").write_bytes(b"checkpoint")
        raise KeyboardInterrupt
    if task.get("fail"):
        raise RuntimeError("simulated crash")
    if task.get("die"):
        os.kill(os.getpid(), signal.SIGKILL)
    alpha = config.get("meta", {}).get("alpha")
    val = 90.0 - abs(math.log10(alpha)) if alpha else 85.0
    status = "diverged" if task.get("diverge") else "completed"
    return write_fake_result(
        run_dir, status=status,
        test_acc=None if status == "diverged" else float(task.get("acc", 80)) + config["seed"],
        val_acc=None if status == "diverged" else val,
        diverged_step=7 if status == "diverged" else None,
        epochs=1, steps=10, wall_time_s=0.01, seed=config["seed"],
        versions={"torch": "fake"}, device="cpu", name=name, meta=config["meta"],
    )


def fake_cka(config: dict[str, Any], out_dir: Path, resume: bool) -> dict[str, Any]:
    with open(os.environ["SUPKD_FAKE_LOG"], "a") as fh:
        fh.write(json.dumps({"name": f"{Path(out_dir).name}/cka", "resume": resume}) + "\n")
    atomic_write_json(Path(out_dir) / "cka.json", {
        "teacher_dir": config["teacher"], "stages_a": ["layer1", "layer4"],
        "diagonal": {"layer1": 0.9, "layer4": 0.5}})
    return {"status": "completed"}
