"""A run that failed before its first checkpoint (a config error found while building its
data or task) does not block its directory: the corrected config starts afresh there, with
or without ``--resume``. A failed run that had trained (a checkpoint exists) still does."""

from __future__ import annotations

import json

import pytest

from supkd.errors import ConfigError, UserError
from supkd.train import run


def _fail_before_training(tiny, d):
    # data.cutout is refused for SupCon views when the loader is built, i.e. after the run
    # directory was written: the run is recorded as failed with nothing trained.
    bad = tiny("task.name=supcon", "data.cutout=2")
    with pytest.raises(ConfigError, match=r"data\.cutout"):
        run(bad, d, quiet=True)
    saved = json.loads((d / "result.json").read_text())
    assert saved["status"] == "failed" and saved["steps"] == 0
    assert not (d / "checkpoints" / "last.pt").exists()


@pytest.mark.parametrize("resume", [False, True])
def test_corrected_config_restarts_a_run_that_failed_before_training(tmp_path, tiny, resume):
    d = tmp_path / "r"
    _fail_before_training(tiny, d)
    good = tiny("task.name=supcon")
    res = run(good, d, resume=resume, quiet=True)
    assert res["status"] == "completed" and res["steps"] > 0
    saved = json.loads((d / "result.json").read_text())
    assert saved["status"] == "completed"
    from supkd.train.checks import load_run_config

    assert load_run_config(d / "config.yaml") == good  # the corrected config replaced the old


def test_a_failed_run_with_a_checkpoint_still_blocks_its_directory(tmp_path, tiny):
    d = tmp_path / "r"
    cfg = tiny("train.epochs=1")
    assert run(cfg, d, quiet=True)["status"] == "completed"
    # Mark it failed after training (as a crash in a later epoch would): the checkpoint
    # holds work, so a plain rerun must not overwrite it.
    saved = json.loads((d / "result.json").read_text())
    (d / "result.json").write_text(json.dumps({**saved, "status": "failed"}))
    assert (d / "checkpoints" / "last.pt").is_file()
    with pytest.raises(UserError, match="already holds a run"):
        run(cfg, d, quiet=True)


def test_a_batch_larger_than_the_training_split_names_the_field(tmp_path, tiny):
    from supkd.data import build_data

    cfg = tiny()
    n = len(build_data(cfg.data, seed=cfg.seed).train)
    with pytest.raises(ConfigError, match=rf"'train.batch_size': {n + 1} is larger than the "
                       rf"training split \({n} images"):
        run(tiny(f"train.batch_size={n + 1}"), tmp_path / "r", quiet=True)
    # ... and the corrected batch size then runs in the same directory.
    assert run(tiny(f"train.batch_size={n}"), tmp_path / "r", quiet=True)["steps"] >= 1
