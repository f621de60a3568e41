"""The grids the cluster tests run through every launcher, and how their results are compared.

Sized for seconds on two shared CPU cores: narrow ResNets on a few hundred embedded digits,
a few dozen steps, one torch thread per run (``resources.cpus: 1`` on every launcher, so
that the launchers' results can be compared bit for bit), ``deterministic: true``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from supkd.experiments.grid import parse_grid
from supkd.models.files import load_model
from supkd.train import distributed as D

SRC = Path(__file__).resolve().parents[2] / "src"

BASE = {
    "device": "cpu",
    "deterministic": True,
    "data": {"name": "digits", "subset": 512, "num_workers": 0},
    "model": {"name": "resnet18", "stem": "cifar", "width": 4},
    "optim": {"name": "sgd", "lr": 0.2},
    "train": {"epochs": 2, "batch_size": 32, "steps_per_epoch": 8, "eval_batch_size": 256,
              "progress": False},
}
RESOURCES = {"cpus": 1, "mem_gb": 1, "time_min": 10}


def unique(prefix: str) -> str:
    """A grid name no other test (or other user of this machine's Slurm) uses: Slurm job
    names are ``supkd-<grid>-<run>``."""
    return f"{prefix}{uuid.uuid4().hex[:6]}"


def small_raw(name: str) -> dict[str, Any]:
    """Teacher -> KD student with α tuned on two candidates -> CKA; a run that fails for
    its own reasons (a batch larger than its split) and a student that needs it."""
    return {
        "grid": name, "seeds": [0], "resources": RESOURCES, "base": BASE,
        "final": {"config": {"data": {"val_fraction": 0.0}}},
        "tune": {"seeds": [0], "config": {"data": {"val_fraction": 0.25}}},
        "runs": {
            "teacher": {"config": {"task": {"name": "ce"}, "model": {"width": 8}},
                        "meta": {"table": "table1", "role": "teacher", "kind": "ce"}},
            "kd_cosine": {
                "alphas": [0.5, 2.0],
                "config": {"task": {"name": "distill", "teacher": "${run:teacher}",
                                    "loss": "cosine", "alpha": "${alpha}"}},
                "meta": {"table": "table2", "method": "cosine", "teacher_kind": "ce"}},
            "broken": {"config": {"task": {"name": "ce"}, "train": {"batch_size": 100000}}},
            "kd_from_broken": {"config": {"task": {"name": "distill",
                                                   "teacher": "${run:broken}",
                                                   "loss": "cosine", "alpha": 1.0}}},
        },
        "cka": {"teacher": "teacher", "students": ["kd_cosine"], "batch_size": 128},
    }


def long_raw(name: str, runs: tuple[str, ...] = ("long_a", "long_b"),
             student: bool = True, epochs: int = 4) -> dict[str, Any]:
    """Runs long enough (16 steps an epoch, a checkpoint every 4) to be requeued, preempted
    or killed in the middle; ``student``: a KD run that needs ``long_a``."""
    base = {**BASE, "model": {**BASE["model"], "width": 8},
            "data": {**BASE["data"], "val_fraction": 0.0},
            "train": {**BASE["train"], "epochs": epochs, "steps_per_epoch": 16,
                      "checkpoint_every_steps": 4}}
    entries: dict[str, Any] = {r: {"config": {"task": {"name": "ce"}}} for r in runs}
    if student:
        entries["after_long"] = {"config": {
            "task": {"name": "distill", "teacher": "${run:long_a}", "loss": "cosine",
                     "alpha": 1.0},
            "train": {"epochs": 1, "checkpoint_every_steps": 0}}}
    return {"grid": name, "seeds": [0], "resources": RESOURCES, "base": base, "runs": entries}


def ddp_raw(name: str) -> dict[str, Any]:
    """One SupCon run (the task that gathers features across ranks) as a 2-rank gloo DDP
    job: the config of tests/train/test_distributed_cli.py."""
    return {
        "grid": name, "seeds": [3],
        "resources": {"cpus": 1, "tasks_per_node": 2, "mem_gb": 2, "time_min": 10},
        "base": {"device": "cpu",
                 "data": {"name": "digits", "subset": 128, "val_fraction": 0.0,
                          "num_workers": 0},
                 "model": {"name": "resnet18", "width": 8, "projection_dim": 16},
                 "optim": {"lr": 0.05},
                 "train": {"epochs": 1, "batch_size": 32, "steps_per_epoch": 2,
                           "eval_batch_size": 256, "progress": False}},
        "runs": {"ddp": {"config": {"task": {"name": "supcon", "temperature": 0.1}}}},
    }


def spec(raw: dict[str, Any]):
    return parse_grid(raw)


def write_spec(raw: dict[str, Any], folder: Path) -> Path:
    path = folder / f"{raw['grid']}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def outcome(runs_dir: Path) -> dict[str, Any]:
    """Per run directory: status, accuracies, error, and the final weights' fingerprint."""
    out = {}
    for d in sorted(p for p in Path(runs_dir).iterdir() if p.is_dir()
                    and not p.name.startswith(".")):
        res = json.loads((d / "result.json").read_text()) if (d / "result.json").is_file() \
            else {}
        fp = D.state_fingerprint(load_model(d)) if (d / "model.pt").is_file() else None
        cka = (json.loads((d / "cka.json").read_text()).get("matrix")
               if (d / "cka.json").is_file() else None)
        out[d.name] = {"status": res.get("status"), "test_acc": res.get("test_acc"),
                       "val_acc": res.get("val_acc"), "alpha": res.get("meta", {}).get("alpha"),
                       "error": res.get("error"), "weights": fp, "cka": cka}
    return out


def launcher_of(runs_dir: Path, run: str) -> dict[str, Any]:
    return json.loads((Path(runs_dir) / run / "result.json").read_text())["launcher"]


def wait_for(predicate, timeout: float, what: str, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def supkd(*args: str, timeout: float = 300, **kw: Any) -> subprocess.Popen[str]:
    """``python -m supkd ARGS`` in a child process (this checkout's code)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])]), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "supkd", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


def torchrun_result(config: Path, out: Path) -> dict[str, Any]:
    """``torchrun --nproc_per_node 2 -m supkd train CONFIG --out OUT`` on CPU (the engine's
    own DDP entry point); its result.json."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--nnodes", "1", "--master_addr", "127.0.0.1", "--master_port", str(port),
         "--monitor-interval", "3", "-m", "supkd", "train", str(config), "--out", str(out),
         "--quiet"],
        env=env, capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((Path(out) / "result.json").read_text())
