"""``make_loader``: one iterable per split, GPU-resident or DataLoader-backed, yielding
:class:`~supkd.data.batch.Batch` objects whose randomness is a function of (seed, epoch)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from supkd.data.batch import Batch
from supkd.data.datasets import DataBundle, TensorImageDataset
from supkd.data.gpu import GpuLoader
from supkd.data.sampling import EpochPlan, make_plan, num_batches, split_batches
from supkd.data.spec import check_cutout
from supkd.data.transforms import (
    AUGMENTS,
    RandomResizedCropFlip,
    SupconAugment,
    SupconRecipe,
    crop_flip,
    cutout_mask,
    erase,
    eval_transform,
    normalize_batch,
    resize_batch,
)
from supkd.errors import ConfigError, DataError

# Data sets at most this large (bytes) may go to the device under gpu_resident="auto",
# further capped at a quarter of the device's free memory.
_GPU_AUTO_MAX_BYTES = 8 << 30


class _PlannedDataset(Dataset):
    """Applies the per-sample transform chosen by the plan. Keys are tuples
    ``(index, seed, aug, centres)`` made in the main process, so workers need no epoch
    state. With ``cutout`` > 0 each item also carries its views' cutout masks, bool (H, W)
    or (V, H, W): the erase itself waits for the normalized batch (the square is 0 after
    normalization, DeVries & Taylor, 2017)."""

    def __init__(
        self, base: Dataset, mode: str, views: int, pad: int, transform: Any, cutout: int = 0,
        mask_side: int | None = None,
    ) -> None:
        self.base, self.mode, self.views, self.pad, self.transform = (
            base,
            mode,
            views,
            pad,
            transform,
        )
        self.cutout = cutout
        # data.resize: batch: the mask is of the resized batch the main process erases.
        self.mask_side = mask_side

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int, list | None, list | None]) -> tuple:
        i, seed, aug, centres = key
        image, label = self.base[i]
        if self.mode == "crop_flip":
            out = [crop_flip(image, *a, self.pad) for a in aug]  # type: ignore[union-attr]
        elif self.mode == "random":
            # A generator of the sample's own: its views are a function of (seed, epoch,
            # index) whatever worker draws them, and torch's global generator is untouched.
            g = torch.Generator().manual_seed(seed)
            out = [self.transform(image, g) for _ in range(self.views)]
        else:
            out = [self.transform(image)] * self.views
        x = torch.stack(out) if self.views > 1 else out[0]
        mask = None
        if self.cutout and centres is not None:
            h, w = (self.mask_side,) * 2 if self.mask_side else x.shape[-2:]
            masks = [cutout_mask(h, w, cy, cx, self.cutout) for cy, cx in centres]
            mask = torch.stack(masks) if self.views > 1 else masks[0]
        # Batch.aug only when the crop + flip is the whole augmentation (teacher cache keys).
        report = aug is not None and self.views == 1 and mask is None
        a = torch.tensor(aug[0]) if report else None
        return x, label, i, a, mask


def _collate(items: list[tuple]) -> tuple:
    xs, ys, idx, augs, masks = zip(*items)
    aug = torch.stack(augs) if augs[0] is not None else None
    mask = torch.stack(masks) if masks[0] is not None else None
    return (
        torch.stack(xs),
        torch.tensor(ys, dtype=torch.long),
        torch.tensor(idx, dtype=torch.long),
        aug,
        mask,
    )


class _KeyBatches:
    """Batch sampler over the current plan's keys (iterated in the main process, so it
    sees ``set_epoch`` even with persistent workers)."""

    def __init__(self) -> None:
        self.batches: list[list[tuple]] = []

    def __iter__(self) -> Iterator[list[tuple]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class Loader:
    """What :func:`make_loader` returns: iterate for one epoch of :class:`Batch` objects.

    ``set_epoch(e)`` selects the epoch (and with it the order and augmentations); without
    it, each full pass advances the epoch by one. ``len(loader)`` is the number of batches
    of one epoch on this rank. ``gpu_resident`` says which path is used.
    """

    def __init__(
        self,
        bundle: DataBundle,
        split: str,
        batch_size: int,
        *,
        train: bool,
        views: int,
        augment: str,
        device: torch.device,
        seed: int,
        aug_seed: int | None,
        epoch_seeded: bool,
        num_workers: int,
        gpu_resident: bool,
        drop_last: bool,
        rank: int,
        world_size: int,
    ) -> None:
        self.dataset = bundle.split(split)
        self.bundle, self.split = bundle, split
        self.batch_size, self.train, self.views, self.augment = batch_size, train, views, augment
        self.device, self.seed, self.epoch_seeded = device, seed, epoch_seeded
        self.aug_seed = aug_seed
        self.drop_last, self.rank, self.world_size = drop_last, rank, world_size
        self.gpu_resident = gpu_resident
        self._epoch, self._explicit_epoch = 0, False
        size = bundle.image_size
        # data.resize: batch: crop/flip and evaluation views at the held size, then each
        # batch resized on the device (SupCon views render at `size` directly).
        self.resize_to = bundle.resize_to if augment != "supcon" else None
        recipe = SupconRecipe.from_config(bundle.config)
        # Cutout belongs to the standard augmentation only (make_loader refuses supcon).
        self.cutout = int(bundle.config.cutout) if augment == "standard" else 0
        if gpu_resident:
            ds = self.dataset
            assert isinstance(ds, TensorImageDataset)
            self._gpu = GpuLoader(
                ds.images,
                ds.labels,
                batch_size=batch_size,
                views=views,
                augment=augment,
                pad=bundle.pad,
                mean=bundle.mean,
                std=bundle.std,
                device=device,
                drop_last=drop_last,
                plan_fn=self._plan,
                size=size,
                recipe=recipe,
                cutout=self.cutout,
                resize_to=self.resize_to,
            )
            return
        if augment == "standard" and bundle.style == "small":
            mode, transform = "crop_flip", None
        elif augment == "standard":
            mode, transform = "random", RandomResizedCropFlip(size, flip=bundle.config.flip)
        elif augment == "supcon":
            mode, transform = "random", SupconAugment(size, bundle.in_channels, recipe)
        else:
            held = bundle.stored_size if self.resize_to else size
            mode, transform = "fixed", eval_transform(bundle.style, held or size)
        self._mode = mode
        self._sampler = _KeyBatches()
        self._dl = DataLoader(
            _PlannedDataset(self.dataset, mode, views, bundle.pad, transform, self.cutout,
                            self.resize_to),
            batch_sampler=self._sampler,
            num_workers=num_workers,
            collate_fn=_collate,
            pin_memory=device.type == "cuda",
            persistent_workers=num_workers > 0,
        )

    def set_epoch(self, epoch: int) -> None:
        self._epoch, self._explicit_epoch = int(epoch), True

    def _plan(self, epoch: int) -> EpochPlan:
        return make_plan(
            len(self.dataset),  # type: ignore[arg-type]
            seed=self.seed,
            epoch=epoch if self.epoch_seeded else 0,
            shuffle=self.train,
            views=self.views,
            pad=self.bundle.pad,
            rank=self.rank,
            world_size=self.world_size,
            even_shards=self.train,
            aug_seed=self.aug_seed,
            flip=self.bundle.config.flip,
            # Centres uniform over the augmented image (size x size for both styles).
            cutout_size=int(self.bundle.image_size) if self.cutout else 0,
        )

    def _shard_len(self) -> int:
        n, w = len(self.dataset), self.world_size  # type: ignore[arg-type]
        if w == 1:
            return n
        return n // w if self.train else len(range(self.rank, n, w))

    def __len__(self) -> int:
        return num_batches(self._shard_len(), self.batch_size, self.drop_last)

    def __iter__(self) -> Iterator[Batch]:
        plan = self._plan(self._epoch)
        try:
            if self.gpu_resident:
                yield from self._gpu.iterate(plan)
            else:
                yield from self._iter_dataloader(plan)
        except DataError as e:
            # A DataError raised in a worker comes back with the worker's traceback in its
            # message; keep the one line the user needs.
            lines = [ln for ln in str(e).splitlines() if ln.strip()]
            line = lines[-1].split("DataError: ", 1)[-1] if lines else str(e)
            raise DataError(line) from None
        if not self._explicit_epoch:
            self._epoch += 1

    def _iter_dataloader(self, plan: EpochPlan) -> Iterator[Batch]:
        seeds = plan.seeds.tolist()
        aug = plan.aug.permute(1, 0, 2).tolist() if self._mode == "crop_flip" else None
        cut = plan.cutout.permute(1, 0, 2).tolist() if plan.cutout is not None else None
        self._sampler.batches = [
            [
                (
                    i,
                    seeds[i],
                    aug[i] if aug is not None else None,
                    cut[i] if cut is not None else None,
                )
                for i in b.tolist()
            ]
            for b in split_batches(plan.order, self.batch_size, self.drop_last)
        ]
        nb = self.device.type == "cuda"
        for x, y, index, a, mask in self._dl:
            x = x.to(self.device, non_blocking=nb)
            if self.resize_to is not None:
                x = resize_batch(x, self.resize_to)
            x = normalize_batch(x, self.bundle.mean, self.bundle.std)
            if mask is not None:
                x = erase(x, mask.to(self.device, non_blocking=nb))
            yield Batch(
                x,
                y.to(self.device, non_blocking=nb),
                index.to(self.device, non_blocking=nb),
                None if a is None else a.to(self.device, non_blocking=nb),
            )


def _auto_workers(n: int) -> int:
    cpus = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    )
    if n < 5000 or cpus <= 2:
        return 0  # worker start-up costs more than it saves on tiny data or two cores
    return min(8, cpus - 1)


def _use_gpu(ds: Dataset, device: torch.device, mode: str) -> bool:
    if mode == "off":
        return False
    fits_tensor = isinstance(ds, TensorImageDataset)
    if mode == "on":
        if not fits_tensor:
            raise ConfigError(
                "config field 'data.gpu_resident': 'on' needs an in-memory data set "
                "(digits, cifar10, cifar100, cifar10-jpeg), not an image folder"
            )
        return True
    if not fits_tensor or device.type != "cuda":
        return False
    nbytes = ds.images.numel()
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= min(_GPU_AUTO_MAX_BYTES, free // 4)


def make_loader(
    bundle: DataBundle,
    split: str,
    batch_size: int,
    *,
    train: bool,
    views: int = 1,
    augment: str | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    aug_seed: int | None = None,
    epoch_seeded: bool = True,
    num_workers: int | None = None,
    gpu_resident: str | None = None,
    drop_last: bool | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> Loader:
    """An iterable of :class:`Batch` over ``bundle``'s ``split`` (train / val / test).

    - ``train``: shuffle (a permutation drawn from (seed, epoch)); evaluation keeps order.
    - ``aug_seed``: seed of the augmentation, independent of the order's ``seed`` (None:
      both from ``seed``). Each sample's pad-crop + flip (and, on the DataLoader path, every
      random view) is then a function of (aug_seed, epoch, index); the GPU path's SupCon
      parameters are drawn per batch slot from the (aug_seed, epoch) stream, so there the
      same stream meets the images in the order ``seed`` gives.
    - ``views``: V > 1 gives x of shape (B, V, C, H, W) (SupCon's two views).
    - ``augment``: ``standard`` | ``supcon`` | ``none`` (None: ``standard`` when training,
      ``none`` otherwise). ``bundle.config.cutout`` > 0 adds cutout to ``standard`` (then
      ``Batch.aug`` is None), is ignored by ``none`` and refused (ConfigError) with
      ``supcon``.
    - ``epoch_seeded``: False replays epoch 0's order and views every epoch.
    - ``num_workers``, ``gpu_resident``: None takes them from ``bundle.config``.
    - ``drop_last``: None drops the last short batch when training only.
    - ``rank``, ``world_size``: DDP shard (see :func:`supkd.data.sampling.make_plan`).
    """
    if augment is None:
        augment = "standard" if train else "none"
    if aug_seed is not None and (isinstance(aug_seed, bool) or not isinstance(aug_seed, int)):
        raise ValueError(f"aug_seed must be an int or None, got {aug_seed!r}")
    if augment not in AUGMENTS:
        raise ValueError(f"augment must be one of {', '.join(AUGMENTS)}, got {augment!r}")
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not isinstance(views, int) or views <= 0:
        raise ValueError(f"views must be a positive int, got {views!r}")
    if world_size <= 0 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    device = torch.device(device)
    ds = bundle.split(split)
    cfg = bundle.config
    if cfg.cutout and augment == "supcon":
        raise ConfigError(
            f"config field 'data.cutout': cutout ({cfg.cutout}) applies to the standard "
            "augmentation only, not to SupCon views; set data.cutout=0 for this run"
        )
    if cfg.cutout and augment == "standard":
        # Against the images this bundle holds (the config was checked against the data
        # set's size; a bundle built by hand may differ).
        check_cutout(cfg.cutout, bundle.image_size)
    mode = cfg.gpu_resident if gpu_resident is None else gpu_resident
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"gpu_resident must be auto, on or off, got {mode!r}")
    workers = cfg.num_workers if num_workers is None else num_workers
    if workers < 0:
        workers = _auto_workers(len(ds))  # type: ignore[arg-type]
    return Loader(
        bundle,
        split,
        batch_size,
        train=train,
        views=views,
        augment=augment,
        device=device,
        seed=seed,
        aug_seed=aug_seed,
        epoch_seeded=epoch_seeded,
        num_workers=workers,
        gpu_resident=_use_gpu(ds, device, mode),
        drop_last=train if drop_last is None else drop_last,
        rank=rank,
        world_size=world_size,
    )
