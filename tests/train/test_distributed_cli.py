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
import socket
import subprocess
import sys

import pytest
import yaml

from supkd.train import distributed as D
from supkd.train.checkpoint import load_model

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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_cpu_processes_end_in_sync(tmp_path):
    cfg = tmp_path / "ddp.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "torch.distributed.run",  # what the `torchrun` script runs
        "--nproc_per_node", "2", "--nnodes", "1",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        "-m", "supkd", "train", str(cfg), "--out", str(out), "--quiet",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180, check=False
    )
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
