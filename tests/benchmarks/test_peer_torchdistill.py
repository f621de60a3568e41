"""benchmarks/peer_torchdistill.py: the cross-check against torchdistill passes (CPU, tiny).

torchdistill is the optional peer (``pip install torchdistill``, the ``bench`` extra): the
tests that run it skip when it is absent; the one-line install hint is tested without it.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "benchmarks" / "peer_torchdistill.py"


@pytest.fixture(scope="module")
def peer():
    """The benchmark script as a module (skips without torchdistill)."""
    pytest.importorskip(
        "torchdistill",
        reason="torchdistill not installed (pip install torchdistill, or the '.[bench]' extra)",
    )
    name = "peer_torchdistill"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # torchdistill's YAML imports the data set class by name
        spec.loader.exec_module(module)
    return sys.modules[name]


def _models(width: int = 8):
    from supkd.models import create_model

    torch.manual_seed(0)
    return create_model("resnet50", width=width).eval(), create_model("resnet18", width=width)


def _assert_passes(check) -> None:
    # the KD term, then per supkd variant (default, channels_last): KD in the step, the step's
    # loss, the parameters and the BatchNorm buffers after it
    assert len(check.checks) == 1 + 2 * 4
    for c in check.checks:
        assert c.ok, c
        if c.values:
            assert c.diff < 1e-5, (c.name, c.torchdistill, c.supkd)
            assert c.torchdistill > 0 and c.supkd > 0  # real loss values, not zeros
        elif "channels_last" not in c.name:  # the same kernels as torchdistill's
            assert c.diff < 1e-6, c.name
        else:  # NHWC kernels: fp32 rounding differs, well below the step itself
            assert c.diff < 1e-2 * check.step_size, c.name
    assert check.step_size > 1e-4  # the first step did move the student
    assert check.ok


def test_cross_check_synthetic(peer):
    images, labels, _ = peer.load_images(8, None, synthetic=True)
    peer.register_images(images, labels, check_batch=8)
    teacher, student = _models()
    check = peer.cross_check(teacher, student, peer.Recipe(batch=8, workers=0, pin_memory=False))
    _assert_passes(check)
    # the check compares torchdistill's and supkd's losses on the same batch
    assert check.batch == 8
    kd = check.get("KD term T²·KL(batchmean), T=4")
    total = check.get("first step loss CE + T²·KL")
    assert check.get("KD term in the training step").supkd == pytest.approx(kd.supkd, abs=1e-5)
    assert total.torchdistill > kd.torchdistill  # CE + KD


@pytest.mark.shared_data
def test_cross_check_cifar10_jpeg(peer, cifar10_jpeg_dir):
    images, labels, src = peer.load_images(8, str(cifar10_jpeg_dir), synthetic=False)
    assert src.startswith("cifar10-jpeg")
    peer.register_images(images, labels, check_batch=8)
    teacher, student = _models()
    _assert_passes(
        peer.cross_check(teacher, student, peer.Recipe(batch=8, workers=0, pin_memory=False))
    )


def _run(args: list[str], pre: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), *sys.path])}
    code = f"{pre}import runpy, sys; sys.argv = {[str(SCRIPT), *args]!r}; " + (
        "runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )


def test_script_runs_tiny(peer):
    """The script end to end: cross-check and one timing round per row, exit 0."""
    proc = _run(
        [
            "--device", "cpu", "--synthetic", "--width", "8", "--batch", "8",
            "--check-batch", "8", "--workers", "0", "--threads", "1",
            "--steps", "1", "--warmup", "1", "--rounds", "1", "--bound",
        ]
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "**passed**" in out
    rows = ("| torchdistill ", "| supkd ", "| supkd, channels_last on ", "| supkd, no data cost")
    for row in rows:
        assert row in out
    assert "torchdistill 1." in out  # its version in the environment block


@pytest.mark.slow
def test_missing_torchdistill_says_how_to_install():
    proc = _run(["--check-only"], pre="import sys; sys.modules['torchdistill'] = None; ")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "pip install torchdistill" in lines[0] and ".[bench]" in lines[0]
