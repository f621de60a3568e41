"""Training: the engine (``fit``, ``run``), the loop object (``TrainLoop``), tasks,
checkpoints, the run directory, distributed helpers.

>>> from supkd.train import run, fit, load_model, distill
>>> result = run(load_config("my_run.yaml"), "runs/my_run")

Names are imported lazily so that ``import supkd.train.distributed`` (or ``.seeding``)
does not import the whole engine.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "run": "supkd.train.engine",
    "fit": "supkd.train.engine",
    "evaluate": "supkd.train.engine",
    "TrainState": "supkd.train.engine",
    "TrainingInterrupted": "supkd.train.engine",
    "TrainLoop": "supkd.train.loop",
    "FitOptions": "supkd.train.options",
    "RunResult": "supkd.train.run_dir",
    "Task": "supkd.train.tasks",
    "register_task": "supkd.train.tasks",
    "load_model": "supkd.models.files",
    "load_model_record": "supkd.models.files",
    "TASKS": "supkd.train.tasks",
    "check_config": "supkd.train.checks",
    "load_run_config": "supkd.train.checks",
    "build_task": "supkd.train.tasks",
    "distill": "supkd.train.api",
    "train_classifier": "supkd.train.api",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'supkd.train' has no attribute {name!r}")
