"""End to end: ``torchrun --nproc_per_node 2 -m supkd train CONFIG`` on CPU (gloo, loopback).

A SupCon run (the task that gathers features across ranks) on the embedded digits data for
two steps. Checks that it completes, that only rank 0 wrote the run directory, and that both
ranks ended with bit-identical parameters equal to the saved model: the engine records every
rank's parameter hash in result.json (``replica_fingerprints``), and the hash of model.pt is
recomputed here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from tests.helpers import supkd_frames

from supkd.train import distributed as D
from supkd.train.checkpoint import load_model
from supkd.utils.ports import free_port

pytestmark = pytest.mark.slow

CONFIG = {
    "name": "ddp-cli",
    "seed": 3,
    "device": "cpu",
    "data": {"name": "digits", "subset": 128, "val_fraction": 0.0, "num_workers": 0},
    "model": {"name": "resnet18", "width": 8, "projection_dim": 16},
    "optim": {"lr": 0.05},
    "train": {
        "epochs": 1,
        "batch_size": 32,  # global: 16 images per rank
        "steps_per_epoch": 2,
        "eval_batch_size": 256,
        "progress": False,
    },
    "task": {"name": "supcon", "temperature": 0.1},
}


def _torchrun_train(tmp_path, out, *args: str) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node 2 -m supkd train CONFIG --out OUT ARGS`` on CPU."""
    cfg = tmp_path / "ddp.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    cmd = [
        sys.executable, "-m", "torch.distributed.run",  # what the `torchrun` script runs
        "--nproc_per_node", "2", "--nnodes", "1",
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
        # torchrun kills the other workers as soon as one exits with an error, looking every
        # 0.1 s by default; under load the ranks leave the same error up to a second apart,
        # so look every 3 s and let every rank print its own message.
        "--monitor-interval", "3",
        "-m", "supkd", "train", str(cfg), "--out", str(out), *args,
    ]  # fmt: skip
    # torch imported through a folder named after supkd, as from a virtual environment
    # inside a supkd checkout: a frame is supkd's by its real location, not by a word.
    venv = tmp_path / "supkd-venv"
    venv.mkdir(exist_ok=True)
    if not (venv / "torch").exists():
        (venv / "torch").symlink_to(Path(torch.__file__).parent, target_is_directory=True)
    path = os.pathsep.join(filter(None, [str(venv), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    return subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180, check=False
    )


def test_torchrun_two_cpu_processes_end_in_sync(tmp_path):
    out = tmp_path / "run"
    proc = _torchrun_train(tmp_path, out, "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]

    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "completed", result
    assert result["world_size"] == 2
    assert result["steps"] == 2

    prints = result["replica_fingerprints"]
    assert len(prints) == 2 and prints[0] == prints[1]
    saved = load_model(out)
    assert D.state_fingerprint(saved, buffers=False) == prints[0]

    # Rank 0 alone writes: one metrics line per epoch, not one per rank.
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["train_loss"] > 0
    assert (out / "checkpoints" / "last.pt").is_file()


def _finished_run(out) -> str:
    """A run directory as a finished run leaves it (only result.json is looked at)."""
    out.mkdir()
    text = json.dumps({"status": "completed", "test_acc": 12.5, "name": "ddp-cli"})
    (out / "result.json").write_text(text)
    return text


def test_torchrun_resume_on_a_finished_run_exits_0_on_every_rank(tmp_path):
    # Rank 0 alone reads result.json; rank 1 must return with it, not wait in a collective
    # for a rank 0 that has already left.
    out = tmp_path / "run"
    text = _finished_run(out)
    proc = _torchrun_train(tmp_path, out, "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert (out / "result.json").read_text() == text  # returned as recorded, not retrained
    assert proc.stdout.count("run 'ddp-cli' completed: test accuracy 12.50%") == 1, proc.stdout
    assert not (out / "checkpoints").exists()


def test_torchrun_user_error_seen_by_rank_0_exits_2_on_every_rank(tmp_path):
    # Without --resume a finished run directory is a user error that only rank 0 detects;
    # every rank must print the one-line message and exit 2, none with a traceback.
    out = tmp_path / "run"
    text = _finished_run(out)
    proc = _torchrun_train(tmp_path, out, "--quiet")
    assert proc.returncode != 0  # torchrun's own exit code (1) says a worker failed
    # torchrun's failure summary lists each worker's exit code (it prints its own
    # traceback, whose frames are torch's; a worker's traceback would name supkd files).
    assert proc.stderr.count("exitcode  : 2 ") == 2, proc.stderr[-3000:]
    assert proc.stderr.count("already holds a run") == 2, proc.stderr[-3000:]
    assert supkd_frames(proc.stderr) == [], proc.stderr[-3000:]
    assert (out / "result.json").read_text() == text
