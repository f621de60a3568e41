"""Epoch plans: the order, shard and augmentation parameters of one epoch.

Everything random about an epoch is drawn here, in a fixed order (permutation, then
crop/flip table, then per-sample seeds, then, only with cutout, the cutout centres), from one
generator seeded by ``(seed, epoch)``, or,
given an ``aug_seed``, the permutation from ``(seed, epoch)`` and the rest from its own
generator seeded by ``(aug_seed, epoch)`` (data order and augmentation as independent
streams, the airbench convention of docs/design.md §9). So a resumed run replays the same batches
and views, every DDP rank computes the same permutation and takes its own shard of it, and
the DataLoader and GPU-resident paths see the same plan (identical batches for pad-crop +
flip, with or without cutout). The cutout centres come last and only when asked for, so
without cutout every other draw, and the generator's state after the plan, is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_MASK63 = (1 << 63) - 1
# Extra part mixed into the augmentation stream's seed, so that aug_seed == seed still gives
# a stream unrelated to the order's.
_AUG_STREAM = 1


def mix_seed(*parts: int) -> int:
    """Combine integers into one 63-bit seed (splitmix64 finalizer per part), so that nearby
    seeds and epochs give unrelated streams rather than shifted copies of one another."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (int(p) & ((1 << 64) - 1))) * 0xBF58476D1CE4E5B9 & ((1 << 64) - 1)
        h = (h ^ (h >> 27)) * 0x94D049BB133111EB & ((1 << 64) - 1)
        h ^= h >> 31
    return h & _MASK63


def sample_crop_flip(n: int, pad: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 3) long ``[dy, dx, flip]``: crop corner in the image padded by ``pad`` on each
    side (uniform in 0..2*pad, as torchvision's RandomCrop(size, padding=pad)) and a
    horizontal flip with probability 1/2."""
    corners = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator)
    flips = torch.randint(0, 2, (n, 1), generator=generator)
    return torch.cat([corners, flips], dim=1)


def sample_cutout_centres(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 2) long ``[cy, cx]``: centres of the cutout squares, each coordinate uniform over
    the ``size`` pixels of a side (DeVries & Taylor, 2017, arXiv:1708.04552: the centre may
    lie anywhere in the image, the square is clipped at the borders)."""
    return torch.randint(0, size, (n, 2), generator=generator)


@dataclass
class EpochPlan:
    """``order`` (M,): this rank's data set indices in visiting order; ``aug`` (V, N, 3)
    pad-crop + flip parameters per view and data set index; ``seeds`` (N,) per-sample seeds
    for the other augmentations; ``generator``: the rest of the epoch's augmentation
    stream; ``cutout`` (V, N, 2) long ``[cy, cx]`` cutout centres per view and data set
    index, or None without cutout."""

    order: torch.Tensor
    aug: torch.Tensor
    seeds: torch.Tensor
    generator: torch.Generator
    cutout: torch.Tensor | None = None


def make_plan(
    n: int,
    *,
    seed: int,
    epoch: int,
    shuffle: bool,
    views: int,
    pad: int,
    rank: int = 0,
    world_size: int = 1,
    even_shards: bool = True,
    aug_seed: int | None = None,
    flip: bool = True,
    cutout_size: int = 0,
) -> EpochPlan:
    """Plan one epoch over a data set of ``n`` samples.

    ``aug_seed``: None draws everything from the ``(seed, epoch)`` stream; an int draws the
    augmentation (``aug``, ``seeds``, ``generator``) from an ``(aug_seed, epoch)`` stream, so
    that the order depends on ``seed`` only and the augmentation of each sample on
    ``aug_seed`` only.

    ``flip``: False sets every flip of ``aug`` to 0 (data whose classes a mirror changes);
    the flips are still drawn, so the crops, seeds and generator are those of ``flip=True``.

    ``cutout_size``: > 0 also draws the cutout centres (V, N, 2), uniform over a side of
    that many pixels (the augmented image's), after everything else: the order, crops,
    flips and seeds are those of a plan without cutout. 0 draws nothing.

    Sharding (DDP): rank r takes ``perm[r::world_size]``. With ``even_shards`` (training)
    the permutation is first cut to a multiple of ``world_size`` so that every rank runs the
    same number of steps (the few samples cut change every epoch); without it (evaluation)
    no sample is dropped or duplicated and shards may differ by one.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    g = torch.Generator().manual_seed(mix_seed(seed, epoch))
    perm = torch.randperm(n, generator=g) if shuffle else torch.arange(n)
    if aug_seed is not None:
        g = torch.Generator().manual_seed(mix_seed(aug_seed, epoch, _AUG_STREAM))
    aug = sample_crop_flip(views * n, pad, g).view(views, n, 3)
    if not flip:
        aug[..., 2] = 0
    seeds = torch.randint(0, 1 << 62, (n,), generator=g)
    # Drawn last and only when used: plans without cutout keep their stream bit for bit.
    centres = (
        sample_cutout_centres(views * n, cutout_size, g).view(views, n, 2)
        if cutout_size > 0
        else None
    )
    if world_size > 1:
        if even_shards:
            perm = perm[: (n // world_size) * world_size]
        perm = perm[rank::world_size]
    return EpochPlan(perm, aug, seeds, g, centres)


def split_batches(order: torch.Tensor, batch_size: int, drop_last: bool) -> list[torch.Tensor]:
    """Consecutive batches of ``order``; the last short one is dropped with ``drop_last``."""
    batches = list(torch.split(order, batch_size))
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


def num_batches(m: int, batch_size: int, drop_last: bool) -> int:
    return m // batch_size if drop_last else -(-m // batch_size)
