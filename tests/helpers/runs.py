"""Fake finished runs for tests that need run directories but no training: the record goes
through supkd's own :class:`RunResult` and :class:`RunDir`, so a fake has exactly the schema
the engine writes (and a change of that schema reaches the fakes)."""

from __future__ import annotations

import os
from typing import Any

from supkd.train.run_dir import RunDir, RunResult


def write_fake_result(run_dir: str | os.PathLike[str], **fields: Any) -> dict[str, Any]:
    """Write ``result.json`` of ``RunResult(**fields)`` into ``run_dir`` (its config.yaml
    first, so that the folder is a run's); returns the record written."""
    return RunDir(run_dir).write_result(RunResult(**fields))
