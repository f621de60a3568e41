"""Shared pieces of the test suite (not tests): tiny run configs, toy tasks and data, a
spawn of DDP ranks with its one retry, fake run directories written through supkd's own
``RunResult``/``RunDir``, and the location of supkd's own source (to tell its frames in a
traceback from anyone else's).

Import as ``from tests.helpers import ...`` (pytest puts the repository root on
``sys.path``: ``pythonpath`` in pyproject's pytest options).
"""

import importlib
from typing import Any

#: name -> the module of tests/helpers that defines it. Loaded on first use, so that a light
#: module (a grid stand-in job, say) imports no torch through this package.
_WHERE = {
    "TINY": "configs", "TINY_RUN": "configs", "tiny_config": "configs", "write_cfg": "configs",
    "SUPKD_DIR": "frames", "supkd_frames": "frames",
    "write_fake_result": "runs",
    "spawn_ranks": "spawn", "train_global_batches": "spawn",
    "ToyTask": "tasks", "toy_data": "tasks", "toy_loader": "tasks",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'tests.helpers' has no attribute {name!r}")
    return getattr(importlib.import_module(f"tests.helpers.{_WHERE[name]}"), name)
