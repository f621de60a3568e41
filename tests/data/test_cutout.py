"""``data.cutout``: one L x L square erased per standard training view (DeVries & Taylor,
2017, "Improved Regularization of Convolutional Neural Networks with Cutout",
arXiv:1708.04552), identical on both loader paths, invisible when off, and kept away from
the teacher cache (whose table holds the un-erased views)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from host_to_device import HostToDevice  # tests/data/host_to_device.py

from supkd.data import (
    DataBundle,
    DataConfig,
    TensorImageDataset,
    build_data,
    check_data_config,
    make_loader,
)
from supkd.data.datasets import NATIVE_SIZES
from supkd.data.gpu import cutout_mask_batch
from supkd.data.sampling import make_plan, split_batches
from supkd.data.transforms import crop_flip, cutout_mask, normalize_batch
from supkd.errors import ConfigError

SIZE, PAD, N = 12, 2, 40
# Means whose 255-multiples are not integers: a normalized pixel is exactly 0 only where
# cutout erased it, so zero pixels count the erased area.
MEAN, STD = (0.41, 0.52, 0.63), (0.2, 0.25, 0.3)


def rgb_bundle(cutout: int = 0, **cfg) -> DataBundle:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (N, 3, SIZE, SIZE), dtype=torch.uint8, generator=g)
    ds = TensorImageDataset(images, torch.arange(N) % 4, [str(i) for i in range(4)])
    config = DataConfig(name="cifar10", cutout=cutout, **cfg)
    return DataBundle(
        "rgb", ds, None, ds, 4, ds.classes, SIZE, MEAN, STD, 3, pad=PAD, config=config
    )


def batches(bundle: DataBundle, gpu: str, *, epoch: int = 1, views: int = 1, **kw) -> list:
    loader = make_loader(
        bundle,
        "train",
        8,
        train=True,
        views=views,
        augment=kw.pop("augment", "standard"),
        seed=kw.pop("seed", 5),
        gpu_resident=gpu,
        num_workers=kw.pop("num_workers", 0),
        **kw,
    )
    loader.set_epoch(epoch)
    return list(loader)


# --------------------------------------------------------------- the paper's definition
def paper_erase(image: torch.Tensor, cy: int, cx: int, length: int) -> torch.Tensor:
    """DeVries & Taylor's Cutout (their util/cutout.py) on one normalized (C, H, W) image,
    centre given: a float mask of ones, zero on the square clipped with np.clip, image *
    mask. Square rows ``cy - L//2`` to ``cy - L//2 + L`` (exclusive): the paper's ``cy +
    L//2`` for even L, side L (not the paper's L - 1) for odd L, as data.cutout documents."""
    h, w = image.shape[-2:]
    mask = np.ones((h, w), np.float32)
    y1 = np.clip(cy - length // 2, 0, h)
    y2 = np.clip(cy - length // 2 + length, 0, h)
    x1 = np.clip(cx - length // 2, 0, w)
    x2 = np.clip(cx - length // 2 + length, 0, w)
    mask[y1:y2, x1:x2] = 0.0
    return image * torch.from_numpy(mask).expand_as(image)


def reference_batch(bundle: DataBundle, index: torch.Tensor, plan, views: int) -> torch.Tensor:
    """Slow per-sample standard augmentation: explicit zero pad, slice, mirror, normalize
    (the loaders' arithmetic), then :func:`paper_erase` at the plan's centre."""
    out = []
    L = bundle.config.cutout
    for i in index.tolist():
        image = bundle.train.images[i]
        vs = []
        for v in range(views):
            dy, dx, flip = plan.aug[v, i].tolist()
            padded = torch.nn.functional.pad(image, (PAD, PAD, PAD, PAD))
            crop = padded[:, dy : dy + SIZE, dx : dx + SIZE]
            crop = crop.flip(-1) if flip else crop
            x = normalize_batch(crop, MEAN, STD)
            if L:
                cy, cx = plan.cutout[v, i].tolist()
                x = paper_erase(x, cy, cx, L)
            vs.append(x)
        out.append(torch.stack(vs) if views > 1 else vs[0])
    return torch.stack(out)


def bits(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous().view(torch.int32)


@pytest.mark.parametrize("gpu", ["on", "off"])
@pytest.mark.parametrize(("views", "cutout", "aug_seed"), [(1, 6, None), (2, 5, 9), (1, 11, 3)])
def test_both_paths_equal_the_papers_definition(
    gpu: str, views: int, cutout: int, aug_seed: int | None
) -> None:
    bundle = rgb_bundle(cutout)
    got = batches(bundle, gpu, views=views, epoch=2, aug_seed=aug_seed)
    plan = make_plan(
        N,
        seed=5,
        epoch=2,
        shuffle=True,
        views=views,
        pad=PAD,
        aug_seed=aug_seed,
        cutout_size=SIZE,
    )
    order = split_batches(plan.order, 8, drop_last=True)
    assert len(got) == len(order) == N // 8
    for b, idx in zip(got, order):
        assert torch.equal(b.index, idx)
        assert torch.equal(b.x, reference_batch(bundle, idx, plan, views))
        # A fill, not a multiply: the erased pixels are +0.0 (the paper's x * 0 gives -0.0
        # for negative x), so the two paths can be compared bit for bit.
        assert not torch.signbit(b.x[b.x == 0]).any()
        assert b.aug is None  # the view is not the cached crop + flip


@pytest.mark.parametrize(("views", "aug_seed"), [(1, None), (2, None), (1, 4)])
def test_gpu_and_dataloader_batches_are_bit_identical(views: int, aug_seed: int | None) -> None:
    bundle = rgb_bundle(7)
    for epoch in (0, 3):
        on = batches(bundle, "on", views=views, epoch=epoch, aug_seed=aug_seed)
        off = batches(bundle, "off", views=views, epoch=epoch, aug_seed=aug_seed)
        assert len(on) == len(off) > 0
        for a, b in zip(on, off):
            assert torch.equal(a.index, b.index) and torch.equal(a.y, b.y)
            assert torch.equal(bits(a.x), bits(b.x))
            assert a.aug is None and b.aug is None


def test_dataloader_workers_give_the_same_batches() -> None:
    bundle = rgb_bundle(6)
    main = batches(bundle, "off")
    worker = batches(bundle, "off", num_workers=1)
    assert all(torch.equal(bits(a.x), bits(b.x)) for a, b in zip(main, worker))


def test_imagefolder_style_standard_views_are_erased_too() -> None:
    """The DataLoader-only RandomResizedCrop + flip standard view: erased at the plan's
    centres after normalization, the rest untouched (same per-sample seeds)."""
    on, off = rgb_bundle(5), rgb_bundle(0)
    on.style = off.style = "imagenet"
    got, plain = batches(on, "off"), batches(off, "off")
    plan = make_plan(N, seed=5, epoch=1, shuffle=True, views=1, pad=PAD, cutout_size=SIZE)
    for b, p in zip(got, plain):
        mask = torch.stack(
            [cutout_mask(SIZE, SIZE, *plan.cutout[0, i].tolist(), 5) for i in b.index]
        )
        assert torch.equal(b.x, p.x.masked_fill(mask[:, None], 0.0))


# ----------------------------------------------------------------- cutout off: unchanged
# sha256 (16 hex) of order, aug, seeds and 8 later draws of the generator, for
# make_plan(50, seed=3, epoch=2, shuffle=True, pad=4, ...), computed before data.cutout
# existed: without cutout the epoch's random stream must not move.
PINNED_PLANS = [
    ({"views": 1, "aug_seed": None}, "7a55d024449a86bf"),
    ({"views": 2, "aug_seed": 7}, "35fd45ae9b449947"),
]


def plan_hash(p) -> str:
    tail = torch.randint(0, 1 << 30, (8,), generator=p.generator)
    m = hashlib.sha256()
    for t in (p.order, p.aug, p.seeds, tail):
        m.update(t.contiguous().numpy().tobytes())
    return m.hexdigest()[:16]


@pytest.mark.parametrize(("kw", "digest"), PINNED_PLANS)
def test_plans_without_cutout_are_the_pinned_stream(kw: dict, digest: str) -> None:
    p = make_plan(50, seed=3, epoch=2, shuffle=True, pad=4, **kw)
    assert p.cutout is None and plan_hash(p) == digest
    assert plan_hash(make_plan(50, seed=3, epoch=2, shuffle=True, pad=4, cutout_size=0, **kw)) == (
        digest
    )


def test_cutout_draws_only_after_the_rest_of_the_plan() -> None:
    a = make_plan(30, seed=1, epoch=4, shuffle=True, views=2, pad=4)
    b = make_plan(30, seed=1, epoch=4, shuffle=True, views=2, pad=4, cutout_size=32)
    assert torch.equal(a.order, b.order) and torch.equal(a.aug, b.aug)
    assert torch.equal(a.seeds, b.seeds)
    assert b.cutout is not None and b.cutout.shape == (2, 30, 2)
    assert int(b.cutout.min()) >= 0 and int(b.cutout.max()) < 32


@pytest.mark.parametrize("gpu", ["on", "off"])
@pytest.mark.parametrize(("augment", "views"), [("standard", 1), ("standard", 2), ("supcon", 2)])
def test_cutout_zero_leaves_batches_bit_identical(gpu: str, augment: str, views: int) -> None:
    """cutout 0 (spelled out) gives the batches of a config that never names the field, and
    those of the plan rendered directly (crop_flip + normalize_batch, as before cutout)."""
    plain = rgb_bundle()
    plain.config = DataConfig(name="cifar10")
    zero = rgb_bundle(0)
    got = batches(zero, gpu, augment=augment, views=views)
    ref = batches(plain, gpu, augment=augment, views=views)
    for a, b in zip(got, ref):
        assert torch.equal(bits(a.x), bits(b.x)) and torch.equal(a.index, b.index)
        assert (a.aug is None) == (b.aug is None)
    if augment == "standard":
        plan = make_plan(N, seed=5, epoch=1, shuffle=True, views=views, pad=PAD)
        for b in got:
            crops = [
                torch.stack(
                    [
                        crop_flip(plain.train.images[i], *plan.aug[v, i].tolist(), PAD)
                        for i in b.index
                    ]
                )
                for v in range(views)
            ]
            x = torch.stack(crops, 1) if views > 1 else crops[0]
            assert torch.equal(b.x, normalize_batch(x, MEAN, STD))
            if views == 1:
                assert torch.equal(b.aug, plan.aug[0, b.index])


@pytest.mark.parametrize("gpu", ["on", "off"])
def test_cutout_changes_only_the_square(gpu: str) -> None:
    """Same crops and flips with and without cutout; only the plan's squares differ."""
    with_cut = batches(rgb_bundle(6), gpu)
    without = batches(rgb_bundle(0), gpu)
    plan = make_plan(N, seed=5, epoch=1, shuffle=True, views=1, pad=PAD, cutout_size=SIZE)
    for a, b in zip(with_cut, without):
        mask = cutout_mask_batch(plan.cutout[0, a.index], SIZE, SIZE, 6)
        assert torch.equal(a.x, b.x.masked_fill(mask[:, None], 0.0))
        assert not torch.equal(a.x, b.x)


@pytest.mark.parametrize("gpu", ["on", "off"])
def test_evaluation_loaders_ignore_cutout(gpu: str) -> None:
    bundle = rgb_bundle(6)
    for train in (False, True):
        loader = make_loader(bundle, "test", 8, train=train, augment="none", gpu_resident=gpu)
        plain = make_loader(rgb_bundle(0), "test", 8, train=train, augment="none", gpu_resident=gpu)
        assert all(torch.equal(a.x, b.x) for a, b in zip(loader, plain))


# ------------------------------------------------------------------- erased-area sizes
def rows_kept(c: int, length: int, size: int) -> int:
    """Rows (or columns) of the square centred at c that lie inside [0, size)."""
    return max(0, min(c - length // 2 + length, size) - max(c - length // 2, 0))


@pytest.mark.parametrize("length", [1, 2, 5, 6, 11])
def test_square_sizes_inside_and_at_the_borders(length: int) -> None:
    cy, cx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    centres = torch.stack([cy.flatten(), cx.flatten()], 1)
    batch = cutout_mask_batch(centres, SIZE, SIZE, length)
    for (y, x), m in zip(centres.tolist(), batch):
        assert torch.equal(m, cutout_mask(SIZE, SIZE, y, x, length))
        area = rows_kept(y, length, SIZE) * rows_kept(x, length, SIZE)
        assert int(m.sum()) == area
        inside = length // 2 <= min(y, x) and max(y, x) - length // 2 + length <= SIZE
        if inside:
            assert area == length * length
            rows = m.any(1).nonzero().flatten()
            # Contiguous, side L, starting at c - L//2 (centre pixel erased).
            assert rows.tolist() == list(range(y - length // 2, y - length // 2 + length))
        assert m[y, x]
    # Corner centre: clipped to (L - L//2)^2.
    assert int(cutout_mask(SIZE, SIZE, 0, 0, length).sum()) == (length - length // 2) ** 2


def test_even_side_is_the_papers_square() -> None:
    """For even L, rows cy - L//2 .. cy + L//2 - 1: the paper's np.clip(y ± L//2) slice."""
    for length in (2, 4, 8):
        for c in range(SIZE):
            m = cutout_mask(SIZE, SIZE, c, c, length)
            lo, hi = np.clip(c - length // 2, 0, SIZE), np.clip(c + length // 2, 0, SIZE)
            ref = torch.zeros(SIZE, SIZE, dtype=torch.bool)
            ref[lo:hi, lo:hi] = True
            assert torch.equal(m, ref)


@pytest.mark.parametrize("gpu", ["on", "off"])
def test_erased_area_statistics_over_epochs(gpu: str) -> None:
    """Zero pixels of each view = the clipped square's area at the plan's centre, and the
    mean area matches its expectation under a uniform centre."""
    L = 6
    bundle = rgb_bundle(L)
    areas = []
    for epoch in range(6):
        plan = make_plan(N, seed=5, epoch=epoch, shuffle=True, views=1, pad=PAD, cutout_size=SIZE)
        for b in batches(bundle, gpu, epoch=epoch):
            erased = (b.x == 0).all(1).flatten(1).sum(1)
            expect = [
                rows_kept(cy, L, SIZE) * rows_kept(cx, L, SIZE)
                for cy, cx in plan.cutout[0, b.index].tolist()
            ]
            assert erased.tolist() == expect
            areas += expect
    kept = [rows_kept(c, L, SIZE) for c in range(SIZE)]
    mean_area = (sum(kept) / SIZE) ** 2  # rows and columns independent
    assert abs(np.mean(areas) - mean_area) < 0.15 * mean_area
    assert max(areas) == L * L and min(areas) >= (L - L // 2) ** 2


# ---------------------------------------------------------------------- configuration
@pytest.mark.parametrize(
    "options",
    [
        {"cutout": -1},
        {"cutout": True},
        {"cutout": 1.5},
        {"cutout": "8"},
        {"cutout": None},
        {"cutout": 32},  # cifar10: 32-pixel images
        {"cutout": 8, "image_size": 8},
        {"name": "digits", "cutout": 16},
    ],
)
def test_bad_cutout_values_raise_config_error_naming_the_field(options: dict) -> None:
    # Types and ranges are refused by the section itself; a side that does not fit the data
    # set's native image size by the data layer's check (before anything is loaded).
    kw = {"name": "cifar10", **options}
    with pytest.raises(ConfigError, match=r"'data\.cutout'"):
        check_data_config(DataConfig(**kw))


def test_good_cutout_values() -> None:
    assert DataConfig().cutout == 0
    assert DataConfig(name="cifar10", cutout=16).cutout == 16
    assert DataConfig(name="cifar10", cutout=31).cutout == 31
    assert DataConfig(name="digits", cutout=20, image_size=32).cutout == 20


def test_native_sizes_are_the_loaders() -> None:
    assert (
        build_data(DataConfig(name="digits", subset=20), seed=0).image_size
        == NATIVE_SIZES["digits"]
    )


def test_yaml_config_override() -> None:
    from supkd.train.checks import load_run_config

    cfg = load_run_config({"data": {"name": "cifar10"}}, ["data.cutout=16"])
    assert cfg.data.cutout == 16 and cfg.to_dict()["data"]["cutout"] == 16
    with pytest.raises(ConfigError, match=r"data\.cutout"):
        load_run_config({"data": {"name": "cifar10"}}, ["data.cutout=-2"])


@pytest.mark.parametrize("gpu", ["on", "off"])
def test_loader_checks_the_bundles_image_size_and_refuses_supcon(gpu: str) -> None:
    # Config checked against cifar10's 32 pixels; these images have 12.
    with pytest.raises(ConfigError, match=r"'data\.cutout'.*12-pixel"):
        batches(rgb_bundle(12), gpu)
    with pytest.raises(ConfigError, match=r"'data\.cutout'.*SupCon"):
        batches(rgb_bundle(4), gpu, augment="supcon", views=2)


# ------------------------------------------------------------ GPU path: no per-batch copy


@pytest.mark.parametrize("views", [1, 2])
def test_gpu_cutout_moves_centres_once_per_epoch(views: int) -> None:
    """On the meta device (no data: any host read raises): the centres are on the device
    after prepare(), and the batches copy nothing from the host."""
    bundle = rgb_bundle(5)
    loader = make_loader(
        bundle, "train", 8, train=True, views=views, device="meta", gpu_resident="on", seed=1
    )
    ep = loader._gpu.prepare(loader._plan(0))
    assert ep.cutout is not None and ep.cutout.device.type == "meta"
    assert ep.cutout.shape == (views, N, 2)
    watch = HostToDevice()
    with watch:
        out = list(loader._gpu.batches(ep))
    assert watch.ops == []
    assert len(out) == N // 8 and all(b.aug is None for b in out)
    shape = (8, views, 3, SIZE, SIZE) if views > 1 else (8, 3, SIZE, SIZE)
    assert all(b.x.shape == shape for b in out)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("views", [1, 2])
def test_cuda_cutout_never_synchronizes_and_equals_the_dataloader(views: int) -> None:
    bundle = rgb_bundle(5)
    kw = dict(train=True, views=views, device="cuda", seed=2, num_workers=0)
    loader = make_loader(bundle, "train", 8, gpu_resident="on", **kw)
    assert loader.gpu_resident
    ep = loader._gpu.prepare(loader._plan(0))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        got = list(loader._gpu.batches(ep))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    # Both paths normalize and erase on the same device: bit-identical there too.
    ref = list(make_loader(bundle, "train", 8, gpu_resident="off", **kw))
    assert len(got) == len(ref) == N // 8
    for a, b in zip(got, ref):
        assert torch.equal(bits(a.x), bits(b.x)) and torch.equal(a.index, b.index)


# -------------------------------------------------------------------------- teacher cache
class TinyTeacher(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(3 * SIZE * SIZE, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def test_teacher_cache_auto_is_off_and_on_refused_with_cutout(tmp_path: Path) -> None:
    from supkd.train import teacher_cache as tc

    teacher = TinyTeacher().eval()
    common = {
        "teacher_dir": tmp_path,
        "device": "cpu",
        "augment": "standard",
        "representation": "logits",
        "progress": False,
    }
    # A stored table for these images exists (built without cutout) ...
    assert tc.get_teacher_cache(teacher, rgb_bundle(0), mode="on", **common) is not None
    assert tc.get_teacher_cache(teacher, rgb_bundle(0), mode="auto", **common) is not None
    # ... but with cutout auto never uses it, and on is refused naming the field and why.
    assert tc.get_teacher_cache(teacher, rgb_bundle(6), mode="auto", **common) is None
    with pytest.raises(ConfigError, match=r"data\.cutout = 6 erases a square"):
        tc.get_teacher_cache(teacher, rgb_bundle(6), mode="on", **common)
    assert tc.get_teacher_cache(teacher, rgb_bundle(6), mode="off", **common) is None


def test_distill_tasks_cache_decision_with_cutout(tmp_path: Path) -> None:
    """The distill task's decision point (tasks._teacher_cache): with cutout, auto gives no
    cache (the teacher then runs live on batch.x, the erased view: Batch.aug is None) and
    on is a ConfigError."""
    from supkd.train.checks import load_run_config
    from supkd.train.tasks import _teacher_cache

    teacher = TinyTeacher().eval()
    for mode in ("auto", "on"):
        cfg = load_run_config(
            {
                "data": {"name": "cifar10", "cutout": 6},
                "task": {"name": "distill", "teacher": str(tmp_path), "teacher_cache": mode},
                "train": {"progress": False},
            },
            [],
        )
        bundle = rgb_bundle(6)
        if mode == "auto":
            assert _teacher_cache(teacher, bundle, tmp_path, torch.device("cpu"), cfg) is None
        else:
            with pytest.raises(ConfigError, match=r"data\.cutout"):
                _teacher_cache(teacher, bundle, tmp_path, torch.device("cpu"), cfg)
