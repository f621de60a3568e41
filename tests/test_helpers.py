"""tests/helpers: the pieces the suite shares do what the tests rely on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tests.helpers import (
    SUPKD_DIR,
    TINY_RUN,
    supkd_frames,
    tiny_config,
    toy_data,
    write_cfg,
    write_fake_result,
)

import supkd
from supkd.train.run_dir import RunDir, RunResult


def _traceback_of(code: str, pythonpath: list[Path]) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, pythonpath))}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 1 and "Traceback" in proc.stderr, proc.stderr
    return proc.stderr


def test_supkd_frames_go_by_the_package_location_not_by_a_word_in_a_path(tmp_path):
    # An environment whose path holds "supkd" (a virtual environment inside a supkd checkout):
    # a third-party package (PyYAML) imported through it fails; none of its frames is supkd's.
    venv = tmp_path / "supkd" / ".venv-supkd" / "site-packages"
    venv.mkdir(parents=True)
    (venv / "yaml").symlink_to(Path(yaml.__file__).parent, target_is_directory=True)
    src = SUPKD_DIR.parent
    text = _traceback_of("import yaml; yaml.safe_load('[')", [venv, src])
    frames = [ln for ln in text.splitlines() if ln.strip().startswith("File ")]
    assert any("supkd" in ln and "yaml" in ln for ln in frames), text  # the old test's trap
    assert supkd_frames(text) == []
    # An error raised inside supkd, run from the same environment: its frames are found.
    text = _traceback_of(
        "from supkd.utils.paths import check_path_name; check_path_name('../x', 'name')",
        [venv, src],
    )
    found = supkd_frames(text)
    assert found and all("paths.py" in ln for ln in found), text


def test_supkd_dir_is_the_imported_package():
    assert Path(supkd.__file__).resolve().parent == SUPKD_DIR
    assert (SUPKD_DIR / "__init__.py").is_file()


def test_fake_results_have_the_engines_schema(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.yaml").write_text("name: r\n")
    record = write_fake_result(run, status="completed", name="r", test_acc=81.5, seed=2)
    on_disk = json.loads((run / "result.json").read_text())
    assert on_disk == record
    assert set(on_disk) == set(RunResult.fields())
    assert (on_disk["status"], on_disk["test_acc"], on_disk["seed"], on_disk["error"]) == (
        "completed", 81.5, 2, None)
    assert RunDir(run).read_result() == (on_disk, None)
    with pytest.raises(ValueError, match="result status"):
        write_fake_result(run, status="exploded")


def test_tiny_config_and_write_cfg(tmp_path):
    cfg = tiny_config("train.epochs=2")
    assert (cfg.data.name, cfg.data.image_size, cfg.model.width, cfg.train.epochs) == (
        "digits", 8, 4, 2)
    path = write_cfg(tmp_path / "c.yaml", train={"epochs": 3}, name="other")
    written = yaml.safe_load(path.read_text())
    assert written["train"]["epochs"] == 3 and written["train"]["batch_size"] == 16
    assert written["name"] == "other"
    assert TINY_RUN["train"]["epochs"] == 1  # the shared mapping is not changed


def test_toy_data_is_seeded():
    x1, y1 = toy_data(8, seed=3)
    x2, y2 = toy_data(8, seed=3)
    assert x1.shape == (8, 4) and y1.shape == (8,)
    assert x1.equal(x2) and y1.equal(y2)
    assert not x1.equal(toy_data(8, seed=4)[0])
    assert int(y1.min()) >= 0 and int(y1.max()) <= 2
