"""Fixtures for the engine tests: tiny digits runs (8x8 images, width-4 ResNet-18)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.helpers import tiny_config


@pytest.fixture(scope="session")
def teacher_runs(tmp_path_factory) -> dict[str, Path]:
    """CE teacher, SupCon teacher and its linear stage (run directories), built once."""
    from supkd.train import run

    root = tmp_path_factory.mktemp("teachers")
    runs = {
        "ce": tiny_config("name=ce_teacher", "model.width=8"),
        "supcon": tiny_config("name=supcon_teacher", "task.name=supcon", "model.width=8"),
    }
    out = {}
    for name, cfg in runs.items():
        res = run(cfg, root / name, quiet=True)
        assert res["status"] == "completed", res
        out[name] = root / name
    res = run(
        tiny_config("name=linear", "task.name=linear", f"task.encoder={out['supcon']}"),
        root / "linear",
        quiet=True,
    )
    assert res["status"] == "completed", res
    out["linear"] = root / "linear"
    return out


@pytest.fixture
def tiny():
    """The :func:`tiny_config` factory (test modules here are not a package)."""
    return tiny_config
