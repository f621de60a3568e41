"""Teacher-cache setup in a 2-rank gloo group on CPU (loopback), the ranks started as
torchrun starts them.

Only rank 0 loads or builds the teacher cache; the other ranks wait for it. When rank 0
finds that the cache cannot be used (here ``task.teacher_cache: on`` with a representation
that is not cached), every rank must stop with the same one-line user error and exit code 2:
not rank 0 alone, with the others left in a collective until the process group is torn down
under them (a hang, or tracebacks from inside supkd).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import supkd
from supkd.models import create_model
from supkd.train.checkpoint import save_model
from supkd.utils.ports import free_port

pytestmark = pytest.mark.slow

EXPECTED = (
    "supkd train: error: teacher cache mode 'on': cannot apply, representation "
    "'embedding' is not 'logits'"
)


def _config(teacher: str, **task) -> dict:
    return {
        "name": "ddp-cache",
        "seed": 0,
        "device": "cpu",
        "data": {"name": "digits", "subset": 64, "val_fraction": 0.0, "num_workers": 0},
        "model": {"name": "resnet18", "width": 4},
        "train": {"epochs": 1, "batch_size": 16, "steps_per_epoch": 1, "progress": False},
        "task": {"name": "distill", "teacher": teacher, "loss": "logit_mse", **task},
    }


def _two_ranks_train(tmp_path, cfg: dict, out) -> list[subprocess.CompletedProcess]:
    """``supkd train`` as ranks 0 and 1 of one gloo group, each its own process with the
    environment torchrun would give it, and each waited for until it exits by itself.

    Not through torchrun: torchrun SIGTERMs the other workers as soon as its monitor sees
    one fail, so whether the slower rank got to print its error depended on the monitor
    interval against the machine's load (the test flaked under load). Waiting on each
    process's own exit has no timing in it.
    """
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    port = str(free_port())
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "WORLD_SIZE": "2", "RANK": str(rank),
               "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": "2", "GROUP_RANK": "0",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "supkd", "train", str(path), "--out", str(out), "--quiet"],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    done = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=300)
            done.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return done


def test_cache_error_on_rank_0_is_the_same_user_error_on_every_rank(tmp_path):
    # A CE teacher for the digits data (1 channel, 10 classes): its encoder is trained, so
    # the task is valid and only the teacher cache (rank 0's decision) refuses it.
    teacher = create_model("resnet18", num_classes=10, width=4, in_channels=1)
    save_model(tmp_path / "teacher" / "model.pt", teacher, {"task": "ce"})
    cfg = _config(str(tmp_path / "teacher"), representation="embedding", teacher_cache="on")
    out = tmp_path / "run"
    ranks = _two_ranks_train(tmp_path, cfg, out)

    package = str(Path(supkd.__file__).resolve().parent)
    for rank, proc in enumerate(ranks):
        # Each rank leaves by itself with the user error's code and its one line; a rank
        # left in a torn-down collective would exit 1 with a traceback through supkd files.
        assert proc.returncode == 2, (rank, proc.stderr[-3000:])
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert lines == [EXPECTED], (rank, proc.stderr[-3000:])
        # Frames in supkd's own source files (the package folder), not any path that happens
        # to contain "supkd" (a virtual environment named after the project, a checkout).
        files = re.findall(r'^\s*File "([^"]+)"', proc.stderr, flags=re.MULTILINE)
        inside = [f for f in files if str(Path(f).resolve()).startswith(package + os.sep)]
        assert not inside, (rank, proc.stderr[-3000:])
    assert not (out / "checkpoints").exists()  # no rank went on to train
