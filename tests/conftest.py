"""Shared test fixtures, and the suite's two tiers.

``pytest -m "not slow"`` is the inner loop (under 3 minutes on 2 cores); the full suite runs
in CI. A test over ~5 s is ``slow``: by its own ``@pytest.mark.slow`` where a file holds a few
of them, or here, centrally, for whole files and folders (:data:`SLOW_PATHS`) and for tests
that need a spawned set of DDP ranks (:data:`SLOW_FIXTURES`). Shared pieces that are not
fixtures (tiny configs, toy tasks, spawn, fake runs) are in ``tests/helpers``.

The real CIFAR-10 pack is found through the environment variable ``SUPKD_CIFAR10_JPEG``
(a cifar10-jpeg pack folder; ``.ci/run`` sets it where the workplace holds one). Without it,
tests that need the pack skip with a clear reason, and the core suite runs on embedded
(digits) or generated data.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
_CIFAR10_JPEG_ENV = os.environ.get("SUPKD_CIFAR10_JPEG", "")
CIFAR10_JPEG_DIR = Path(_CIFAR10_JPEG_ENV) if _CIFAR10_JPEG_ENV else None

# Two cores are shared by everything in CI, including the subprocesses the integration tests
# start; OpenMP threads spin-wait when cores are contended (a 12-step run measured 40 s with
# 2 threads under load vs 0.8 s with 1), so every process of the test suite uses one thread.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


TESTS_DIR = Path(__file__).resolve().parent

#: Files and folders (relative to tests/) whose every test is slow: real clusters, torchrun,
#: kills and resumes of real runs, grids whose workers are killed.
SLOW_PATHS = (
    "cluster",  # real Slurm and Ray
    "train/test_distributed_cli.py",  # torchrun, two CPU processes per test
    "train/test_distributed_cache.py",
    "train/test_distributed_crd.py",
    "train/test_resume.py",  # every case trains, is interrupted and resumes
    "integration/test_kill_resume.py",
    "integration/test_soak.py",
    "integration/test_train_pipeline.py",
    "experiments/test_grid_signals.py",
    "experiments/test_grid_worker_signals.py",
    "reliability/test_grid_worker_death.py",
)
#: Fixtures that make a test slow wherever it is: DDP ranks spawned for a module, the timm
#: teachers trained for a module.
SLOW_FIXTURES = frozenset({"ranks", "timm_runs"})
#: Where the default timeout (pyproject's ``timeout``) is too short: folder -> seconds. The
#: cluster tests' session fixtures start Ray and run the test grids once.
TIMEOUTS = {"cluster": 1200}


def _under(item: pytest.Item, rel: str) -> bool:
    path = TESTS_DIR / rel
    return item.path == path or path in item.path.parents


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = [rel for rel in SLOW_PATHS if not (TESTS_DIR / rel).exists()]
    if missing:  # a renamed file would silently join the fast tier
        raise pytest.UsageError(f"tests/conftest.py SLOW_PATHS names missing paths: {missing}")
    for item in items:
        if any(_under(item, rel) for rel in SLOW_PATHS) or SLOW_FIXTURES & set(
            getattr(item, "fixturenames", ())
        ):
            item.add_marker(pytest.mark.slow)
        for rel, seconds in TIMEOUTS.items():
            if _under(item, rel) and item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(seconds))


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test inside its own tmp_path (the current directory), so that whatever a
    command writes relative to it lands there. Use: ``pytestmark =
    pytest.mark.usefixtures("in_tmp")``."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def cifar10_jpeg_dir() -> Path:
    """Path to the cifar10-jpeg pack ($SUPKD_CIFAR10_JPEG), or skip the test without it."""
    if CIFAR10_JPEG_DIR is None:
        pytest.skip("set SUPKD_CIFAR10_JPEG to a cifar10-jpeg pack to run this")
    if not (CIFAR10_JPEG_DIR / "train.npz").is_file():
        pytest.skip(f"SUPKD_CIFAR10_JPEG={CIFAR10_JPEG_DIR} holds no train.npz: set "
                    "SUPKD_CIFAR10_JPEG to a cifar10-jpeg pack to run this")
    return CIFAR10_JPEG_DIR


#: Tiny timm networks, one per family (a CNN, a ConvNeXt, a ViT), as (model name, timm_args)
#: for 32-pixel inputs: widths and depths cut down through timm_args so that a training step
#: takes milliseconds on one CPU core.
TIMM_TINY = {
    "cnn": ("timm/resnet10t", {"channels": [8, 16, 32, 64], "stem_width": 8}),
    "convnext": ("timm/convnext_atto", {"dims": [8, 16, 32, 64], "depths": [1, 1, 1, 1]}),
    "vit": ("timm/vit_tiny_patch16_224",
            {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}),
}


@pytest.fixture(scope="session")
def timm_tiny() -> dict[str, tuple[str, dict]]:
    """:data:`TIMM_TINY` (skips when timm is not installed: it is the ``timm`` extra)."""
    pytest.importorskip("timm")
    return TIMM_TINY
