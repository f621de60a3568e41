"""A launcher is its own file: ``tests/cluster/plugins/tiny_launcher.py``, loaded with
``supkd --plugin``, runs a grid, validates its own ``resources.tiny`` section when the spec
is read, and answers ``--status`` for the runs it recorded. No cluster needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from supkd.cli import main
from supkd.experiments.grid.launchers.records import write_launch

from .grids import BASE, RESOURCES, SRC, write_spec

PLUGIN = Path(__file__).resolve().parent / "plugins" / "tiny_launcher.py"


def _raw(tiny: object = None) -> dict:
    base = {**BASE, "train": {**BASE["train"], "epochs": 1, "steps_per_epoch": 2}}
    resources = {**RESOURCES, **({"tiny": tiny} if tiny is not None else {})}
    return {"grid": "tiny", "seeds": [0], "resources": resources, "base": base,
            "runs": {"a": {"config": {"task": {"name": "ce"}}},
                     "b": {"config": {"task": {"name": "distill", "teacher": "${run:a}",
                                               "loss": "cosine", "alpha": 1.0}}}}}


@pytest.fixture()
def supkd_cli(monkeypatch, capsys):
    """``supkd --plugin tiny_launcher.py ARGS`` in this process: (exit code, out, err).
    The CLI exports its plugins to SUPKD_PLUGINS; monkeypatch puts the variable back."""
    monkeypatch.delenv("SUPKD_PLUGINS", raising=False)

    def run(*args: str) -> tuple[int, str, str]:
        code = main(["--plugin", str(PLUGIN), *args])
        cap = capsys.readouterr()
        return code, cap.out, cap.err
    return run


def test_a_plugin_launcher_runs_a_grid_with_its_own_section(tmp_path, supkd_cli):
    spec, out = write_spec(_raw({"tag": "mine"}), tmp_path), tmp_path / "runs"
    code, text, err = supkd_cli("grid", str(spec), "--launcher", "tiny", "--out", str(out),
                                "--no-report")
    assert code == 0, text + err
    for run in ("a-s0", "b-s0"):
        res = json.loads((out / run / "result.json").read_text())
        assert res["status"] == "completed"
        assert res["launcher"]["name"] == "tiny" and res["launcher"]["tag"] == "mine"
        entry = json.loads((out / run / "launcher.json").read_text())[run]
        assert entry["launcher"] == "tiny"


@pytest.mark.parametrize(("tiny", "message"), [
    ({"tag": ""}, "grid field 'resources.tiny.tag': expected a non-empty string, got ''"),
    ({"colour": "red"}, "grid field 'resources.tiny': unknown key 'colour' (expected tag)"),
    (5, "grid field 'resources.tiny': expected a mapping, got 5"),
])
def test_the_plugin_validates_its_section_when_the_spec_is_read(tmp_path, supkd_cli, tiny,
                                                                message):
    spec = write_spec(_raw(tiny), tmp_path)
    code, _, err = supkd_cli("grid", str(spec), "--dry-run")
    assert code == 2 and err.strip().splitlines() == [f"supkd grid: error: {message}"], err
    assert not (tmp_path / "runs").exists()


def test_without_the_plugin_its_section_is_unknown(tmp_path):
    # A fresh process: in this one the plugin may be registered already.
    spec = write_spec(_raw({"tag": "mine"}), tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("SUPKD_PLUGINS", None)
    proc = subprocess.run([sys.executable, "-m", "supkd", "grid", str(spec), "--dry-run"],
                          env=env, text=True, capture_output=True, timeout=300, check=False)
    assert proc.returncode == 2 and "unknown key 'tiny'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_status_asks_the_plugin_what_is_live(tmp_path, supkd_cli):
    spec, out = write_spec(_raw(), tmp_path), tmp_path / "runs"
    # A run recorded by the tiny launcher of a live process (this one): its live() says so.
    write_launch(out / "a-s0", "a-s0", {"launcher": "tiny", "pid": os.getpid()})
    write_launch(out / "b-s0", "b-s0", {"launcher": "tiny", "pid": 2**22 + 12345})
    code, text, err = supkd_cli("grid", str(spec), "--out", str(out), "--status")
    assert code == 0, err
    lines = {ln.split()[0]: ln for ln in text.splitlines()[1:-1]}
    assert "running" in lines["a-s0"] and f"tiny launcher, pid {os.getpid()}" in lines["a-s0"]
    assert "not started" in lines["b-s0"]
