"""Temporary files left by a SIGKILL during an atomic write are removed when a run starts."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from supkd.errors import UserError
from supkd.train import run
from supkd.utils.atomic import atomic_write_bytes, sweep_stale_temps


def _killed_write(path) -> None:
    """``atomic_write_bytes(path, ...)`` in a child process SIGKILLed before the rename."""
    code = textwrap.dedent(
        f"""
        import os, signal
        from supkd.utils import atomic
        # Killed after the data is written, before os.replace: what a kill mid-checkpoint does.
        atomic.os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)
        atomic.atomic_write_bytes({str(path)!r}, b"x" * 4096)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def test_sweep_removes_only_what_killed_atomic_writes_left(tmp_path):
    ck = tmp_path / "checkpoints"
    atomic_write_bytes(ck / "last.pt", b"complete")
    _killed_write(ck / "last.pt")
    _killed_write(tmp_path / "result.json")
    stale = sorted([*ck.glob(".last.pt.*.tmp"), *tmp_path.glob(".result.json.*.tmp")])
    assert len(stale) == 2 and all(p.stat().st_size == 4096 for p in stale)

    keep = [
        ck / "last.pt",
        tmp_path / "notes.tmp",  # not hidden
        tmp_path / ".a.tmp",  # no 8-character random part
        tmp_path / ".b.ABCDEFGH.tmp",  # not tempfile's alphabet
        tmp_path / "tensorboard" / ".events.abcd1234.tmp",  # not a folder that is swept
    ]
    for p in keep[1:]:
        p.parent.mkdir(exist_ok=True)
        p.write_text("keep")

    assert sweep_stale_temps(tmp_path) == stale
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in keep)
    assert (ck / "last.pt").read_bytes() == b"complete"
    assert sweep_stale_temps(tmp_path) == []  # nothing left to do
    assert sweep_stale_temps(tmp_path / "missing") == []


def test_run_start_sweeps_its_own_directory(tmp_path, tiny):
    out = tmp_path / "run"
    _killed_write(out / "checkpoints" / "last.pt")
    _killed_write(out / "config.yaml")
    _killed_write(tmp_path / "other.json")  # beside the run directory: not its own
    res = run(tiny(), out, resume=True, quiet=True)  # no checkpoint: starts afresh
    assert res["status"] == "completed"
    assert not list(out.rglob("*.tmp"))
    assert len(list(tmp_path.glob(".other.json.*.tmp"))) == 1


def test_refused_run_leaves_the_directory_alone(tmp_path, tiny):
    out = tmp_path / "run"
    out.mkdir()
    (out / "result.json").write_text('{"status": "completed"}')
    _killed_write(out / "checkpoints" / "best.pt")
    with pytest.raises(UserError, match="already holds a run"):
        run(tiny(), out, quiet=True)
    assert len(list((out / "checkpoints").glob(".best.pt.*.tmp"))) == 1
