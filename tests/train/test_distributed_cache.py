"""Teacher-cache setup under ``torchrun --nproc_per_node 2`` on CPU (gloo, loopback).

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


def _torchrun_train(tmp_path, cfg: dict, out) -> subprocess.CompletedProcess:
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cmd = [
        sys.executable, "-m", "torch.distributed.run",  # what the `torchrun` script runs
        "--nproc_per_node", "2", "--nnodes", "1",
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
        # torchrun SIGTERMs the other workers as soon as it sees one fail, and looks every
        # 0.1 s by default: on this shared 2-core machine the ranks leave the same error
        # up to a second or more apart (rank 0 also writes result.json), so the later one
        # could be killed before printing it. Looking every 3 s lets every rank finish its
        # own exit, which is what this test checks.
        "--monitor-interval", "3",
        "-m", "supkd", "train", str(path), "--out", str(out), "--quiet",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_cache_error_on_rank_0_is_the_same_user_error_on_every_rank(tmp_path):
    # A CE teacher for the digits data (1 channel, 10 classes): its encoder is trained, so
    # the task is valid and only the teacher cache (rank 0's decision) refuses it.
    teacher = create_model("resnet18", num_classes=10, width=4, in_channels=1)
    save_model(tmp_path / "teacher" / "model.pt", teacher, {"task": "ce"})
    cfg = _config(str(tmp_path / "teacher"), representation="embedding", teacher_cache="on")
    out = tmp_path / "run"
    proc = _torchrun_train(tmp_path, cfg, out)

    assert proc.returncode != 0  # torchrun's own exit code (1) says a worker failed
    # torchrun's failure summary lists each worker's exit code; a worker that died in a
    # torn-down collective would show 1 (or a signal) and a traceback through supkd files.
    assert proc.stderr.count("exitcode  : 2 ") == 2, proc.stderr[-3000:]
    # Counted, not split into lines: two ranks writing one stderr can interleave a message
    # with the other's newline.
    assert proc.stderr.count("supkd train: error:") == 2, proc.stderr[-3000:]
    assert proc.stderr.count(EXPECTED) == 2, proc.stderr[-3000:]
    # Frames in supkd's own source files (the package folder), not any path that happens to
    # contain "supkd" (a virtual environment named after the project, a checkout folder).
    package = str(Path(supkd.__file__).resolve().parent)
    files = re.findall(r'^\s*File "([^"]+)"', proc.stderr, flags=re.MULTILINE)
    inside = [f for f in files if str(Path(f).resolve()).startswith(package + os.sep)]
    assert not inside, proc.stderr[-3000:]
    assert not (out / "checkpoints").exists()  # no rank went on to train
