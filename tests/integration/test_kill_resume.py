"""Nothing is lost when a training process dies (docs/design.md §8, issue 8 items 3-4).

A real ``python -m supkd train`` process on tiny digits runs is
- SIGKILLed at seeded random moments, some of them while a checkpoint is being written
  (a checkpoint after every step, and the kill sent the moment a temporary checkpoint file
  appears): after every kill the run directory must load (config, metrics, last.pt as a
  checkpoint and as a model), and the final ``--resume`` must end with exactly the result and
  the weights of a run never interrupted (deterministic CPU run);
- sent SIGTERM: it saves a checkpoint and exits 130 with no traceback; ``--resume`` completes
  with the uninterrupted result. Two quick SIGINTs (a second Ctrl-C) stop it at once, and the
  directory still resumes.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from supkd.utils.atomic import read_jsonl

REPO = Path(__file__).resolve().parents[2]

# 2 epochs x 6 steps of a width-4 ResNet-18 on digits: ~1 s of training on 2 cores, so that
# most of the time is spent where kills are interesting (steps and checkpoint writes).
CONFIG = {
    "name": "killme",
    "seed": 3,
    "deterministic": True,
    "device": "cpu",
    "data": {"name": "digits", "subset": 200, "num_workers": 0, "val_fraction": 0.1},
    "model": {"name": "resnet18", "width": 4},
    "optim": {"lr": 0.05},
    "train": {
        "epochs": 2,
        "batch_size": 16,
        "eval_batch_size": 128,
        "steps_per_epoch": 6,
        "checkpoint_every_steps": 1,
        "progress": False,
    },
}
VOLATILE = ("epoch_time_s", "images_per_s", "wall_time_s")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONWARNINGS"] = "ignore"
    # One intra-op thread: the same float sums in every process (and the reference), and
    # no OpenMP spin-waiting when CI's two cores are shared with other jobs (measured: a
    # 12-step run took 40 s with 2 threads under load, 0.8 s with 1).
    env["OMP_NUM_THREADS"] = "1"
    return env


def _start(cfg_path: Path, run_dir: Path, resume: bool) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "supkd", "train", str(cfg_path), "--out", str(run_dir)]
    if resume:
        cmd.append("--resume")
    return subprocess.Popen(
        cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def _wait_for(pred, proc: subprocess.Popen, timeout: float = 60, poll: float = 0.002) -> bool:
    """Poll ``pred()`` until true; False when the process ended first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(poll)
    raise AssertionError("timed out waiting for the training process")


def _temp_files(run_dir: Path) -> set[str]:
    try:
        return {n for n in os.listdir(run_dir / "checkpoints") if n.endswith(".tmp")}
    except FileNotFoundError:
        return set()


def _step(last: Path) -> int:
    try:
        return int(torch.load(last, weights_only=True)["step"])
    except Exception:  # not written yet
        return -1


def _assert_loadable(run_dir: Path) -> None:
    """What a resumed run, a report or a teacher load reads must parse, whatever the kill."""
    from supkd.train.checkpoint import load_checkpoint, load_model

    if (run_dir / "config.yaml").exists():
        assert isinstance(yaml.safe_load((run_dir / "config.yaml").read_text()), dict)
    read_jsonl(run_dir / "metrics.jsonl")  # a cut last line is skipped, never an error
    last = run_dir / "checkpoints" / "last.pt"
    if last.exists():
        ckpt = load_checkpoint(last)
        assert ckpt["step"] >= 1
        load_model(last)
    for name in ("result.json",):
        if (run_dir / name).exists():
            json.loads((run_dir / name).read_text())
    if (run_dir / "model.pt").exists():
        load_model(run_dir / "model.pt")


def _final_state(run_dir: Path) -> tuple[dict, list[dict], dict[str, torch.Tensor]]:
    result = json.loads((run_dir / "result.json").read_text())
    metrics = [
        {k: v for k, v in r.items() if k not in VOLATILE}
        for r in read_jsonl(run_dir / "metrics.jsonl")
    ]
    weights = torch.load(run_dir / "model.pt", weights_only=True)["state_dict"]
    return result, metrics, weights


def _assert_same_run(run_dir: Path, reference: Path) -> None:
    res, metrics, weights = _final_state(run_dir)
    ref_res, ref_metrics, ref_weights = _final_state(reference)
    assert res["status"] == "completed"
    for key in ("test_acc", "val_acc", "epochs", "steps"):
        assert res[key] == ref_res[key], key
    assert metrics == ref_metrics
    assert weights.keys() == ref_weights.keys()
    for k in weights:
        assert torch.equal(weights[k], ref_weights[k]), f"{k} differs after kill/resume"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, Path, float]:
    """An uninterrupted run, in this process with one thread like the subprocesses:
    (config file, run dir, seconds the run took)."""
    from supkd.train import run

    d = tmp_path_factory.mktemp("kill")
    cfg = d / "config.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    run_dir = d / "reference"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t0 = time.monotonic()
        assert run(CONFIG, run_dir, quiet=True)["status"] == "completed"
        took = time.monotonic() - t0
    finally:
        torch.set_num_threads(threads)
    return cfg, run_dir, took


class _WriteCounter:
    """Counts the checkpoint writes a process starts (each creates a new temporary file in
    checkpoints/; with a checkpoint after every step that is one per step)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.stale = _temp_files(run_dir)  # left behind by an earlier SIGKILL mid-write
        self.seen: set[str] = set()

    def at_least(self, k: int) -> bool:
        self.seen |= _temp_files(self.run_dir) - self.stale
        return len(self.seen) >= k


def test_sigkill_at_random_moments_always_resumes(reference, tmp_path):
    cfg, ref_dir, _ = reference
    rng = random.Random(1234)
    run_dir = tmp_path / "run"
    kills: list[str] = []
    for attempt in range(4):
        writes = _WriteCounter(run_dir)
        proc = _start(cfg, run_dir, resume=attempt > 0)
        # Kill during the k-th checkpoint write of this process (inside atomic_torch_save),
        # or at a random moment after it (a step, the evaluation, the final model save).
        mid_write = attempt % 2 == 1
        k = rng.randint(1, 3)
        if _wait_for(lambda k=k, w=writes: w.at_least(k), proc, poll=0.0002):
            if not mid_write:
                time.sleep(rng.uniform(0.0, 0.2))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills.append(f"{'mid-write' if mid_write else 'random'}@{k}")
        code, err = _finish(proc)
        assert "Traceback" not in err, err
        assert code in (0, -signal.SIGKILL), (code, err)
        _assert_loadable(run_dir)
        if code == 0:
            break  # finished before the kill
    assert len(kills) >= 3 and any(x.startswith("mid-write") for x in kills), kills
    proc = _start(cfg, run_dir, resume=True)
    code, err = _finish(proc)
    assert code == 0, err
    _assert_loadable(run_dir)
    _assert_same_run(run_dir, ref_dir)


def test_sigterm_checkpoints_and_exits_cleanly_then_resumes(reference, tmp_path):
    cfg, ref_dir, _ = reference
    run_dir = tmp_path / "run"
    proc = _start(cfg, run_dir, resume=False)
    last = run_dir / "checkpoints" / "last.pt"
    assert _wait_for(last.exists, proc), "finished before the first checkpoint"
    proc.send_signal(signal.SIGTERM)
    code, err = _finish(proc, timeout=60)
    assert code == 130, (code, err)
    assert "Traceback" not in err
    ckpt_step = torch.load(last, weights_only=True)["step"]
    assert 1 <= ckpt_step < CONFIG["train"]["epochs"] * CONFIG["train"]["steps_per_epoch"]
    assert (
        not (run_dir / "result.json").exists()
        or json.loads((run_dir / "result.json").read_text())["status"] != "completed"
    )

    # A second Ctrl-C exits at once; what is on disk still resumes.
    proc = _start(cfg, run_dir, resume=True)
    if _wait_for(lambda: _step(last) > ckpt_step, proc, poll=0.005):
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGINT)
    code, err = _finish(proc, timeout=60)
    if code == -signal.SIGINT:
        # The signals came after the run had ended, while Python shut down (it restores the
        # default SIGINT action then): the run is complete on disk.
        assert json.loads((run_dir / "result.json").read_text())["status"] == "completed"
    else:
        assert code in (130, 0), (code, err)
    assert "Traceback" not in err
    _assert_loadable(run_dir)

    proc = _start(cfg, run_dir, resume=True)
    code, err = _finish(proc)
    assert code == 0, err
    _assert_same_run(run_dir, ref_dir)
