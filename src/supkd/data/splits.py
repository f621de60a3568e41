"""Seeded, stratified selection of indices (validation hold-out and ``subset``)."""

from __future__ import annotations

import numpy as np
import torch


def stratified_split(
    labels: torch.Tensor, n_take: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``range(N)`` into (taken (n_take,), rest (N - n_take,)), both sorted, long.

    Each class contributes in proportion to its size; the rounding remainders go to the
    classes with the largest fractional share (largest-remainder apportionment), ties to the
    smaller class id, so that the split is exactly ``n_take`` long and a pure function of
    ``(labels, n_take, seed)``. Written by hand rather than with sklearn's
    ``train_test_split(stratify=...)``, which refuses classes with a single member and
    splits smaller than the number of classes, both common on tiny user folders and subsets.
    """
    y = np.asarray(labels.cpu().numpy(), dtype=np.int64)
    n = len(y)
    if not 0 <= n_take <= n:
        raise ValueError(f"cannot take {n_take} of {n} samples")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    exact = counts * (n_take / max(n, 1))
    quota = np.floor(exact).astype(np.int64)
    short = n_take - int(quota.sum())
    if short > 0:
        order = sorted(range(len(classes)), key=lambda k: (-(exact[k] - quota[k]), classes[k]))
        for k in order[:short]:
            quota[k] += 1
    taken = []
    for c, q in zip(classes, quota):
        members = np.flatnonzero(y == c)
        taken.append(rng.permutation(members)[:q])
    take = np.sort(np.concatenate(taken)) if taken else np.zeros(0, dtype=np.int64)
    mask = np.ones(n, dtype=bool)
    mask[take] = False
    return torch.from_numpy(take).long(), torch.from_numpy(np.flatnonzero(mask)).long()
