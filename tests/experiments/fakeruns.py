"""Write run directories in the engine's format (docs/architecture.md) for report tests:
the result through supkd's own ``RunResult``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from tests.helpers import write_fake_result

from supkd.train.run_dir import FINAL_STATUSES, RunResult


def write_run(
    root: Path,
    name: str,
    meta: dict[str, Any],
    *,
    status: str | None = "completed",
    test_acc: float | None = None,
    val_acc: float | None = None,
    diverged_step: int | None = None,
    config: dict[str, Any] | None = None,
    wall_time_s: float = 1.5,
) -> Path:
    """One run directory: config.yaml always, result.json unless ``status`` is None."""
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    cfg = {"name": name, "seed": meta.get("seed", 0), "meta": meta,
           "data": {"name": "digits"}, "model": {"name": "resnet18", "width": 8},
           "optim": {"name": "sgd", "lr": 0.05}, "train": {"epochs": 3, "batch_size": 64},
           "task": {"name": "ce"}}
    cfg.update(config or {})
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    if status is None:
        return d
    fields = {"test_acc": test_acc, "val_acc": val_acc, "best_val_acc": val_acc,
              "diverged_step": diverged_step, "epochs": 3, "steps": 30,
              "wall_time_s": wall_time_s, "seed": cfg["seed"],
              "versions": {"torch": "2.x", "supkd": "0.1"}, "device": "cpu", "name": name,
              "meta": meta}
    if status in FINAL_STATUSES:
        write_fake_result(d, status=status, **fields)
    else:  # a status no writer produces: the engine's schema, that value in it
        record = {**RunResult(status="completed", **fields).to_dict(), "status": status}
        (d / "result.json").write_text(json.dumps(record))
    return d
