"""Seeds and random-number-generator state.

One user seed expands into independent seeds for weight initialization, data order and
augmentation (the airbench convention, docs/design.md §9), so that e.g. changing the data order
leaves the initial weights unchanged. The expansion uses NumPy's ``SeedSequence``, whose
spawned children are statistically independent streams (NumPy docs, "Parallel random
number generation").

``rng_state()`` / ``set_rng_state()`` capture every global generator a training step can
touch (Python, NumPy, torch CPU and CUDA), so that a resumed run draws the same numbers as
one never interrupted.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class Seeds:
    """The three seeds derived from one run seed."""

    init: int
    data: int
    augment: int


def expand_seed(seed: int) -> Seeds:
    """Split ``seed`` into ``Seeds(init, data, augment)``, each in [0, 2**31)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    children = np.random.SeedSequence(seed).spawn(3)
    init, data, aug = (int(c.generate_state(1, dtype=np.uint32)[0] >> 1) for c in children)
    return Seeds(init=init, data=data, augment=aug)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) global generators with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(enabled: bool) -> None:
    """Turn PyTorch's deterministic algorithms on or off.

    On: ``torch.use_deterministic_algorithms(True)`` (an op with no deterministic kernel
    warns rather than stops the run), cuDNN autotuning off, and the cuBLAS workspace
    setting that deterministic CUDA matmuls need (PyTorch docs, "Reproducibility").
    Off: cuDNN autotuning on (fastest kernels, run-to-run bit differences on CUDA).
    """
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def rng_state() -> dict[str, Any]:
    """Every global generator's state (for checkpoints)."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _numpy_state() -> tuple[Any, ...]:
    # Stored as a tensor + plain numbers (not an ndarray) so that checkpoints load with
    # torch.load(weights_only=True), which refuses arbitrary pickled objects.
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss))


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured (CUDA states only when CUDA is in use)."""
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
