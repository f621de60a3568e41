"""make_loader: Batch structure, both paths identical, seeded epochs, DDP shards."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from supkd.data import Batch, DataConfig, build_data, make_loader
from supkd.data.sampling import mix_seed, sample_crop_flip
from supkd.errors import ConfigError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:torchvision")


@pytest.fixture(scope="module")
def digits():
    return build_data(DataConfig(name="digits", subset=300), seed=0)


def _norm(bundle, images: torch.Tensor) -> torch.Tensor:
    m = torch.tensor(bundle.mean).view(-1, 1, 1)
    s = torch.tensor(bundle.std).view(-1, 1, 1)
    return (images.float() / 255 - m) / s


@pytest.mark.parametrize("gpu", ["off", "on"])
def test_eval_batches_are_the_normalized_images_in_order(digits, gpu: str) -> None:
    loader = make_loader(digits, "test", 128, train=False, gpu_resident=gpu)
    assert loader.gpu_resident == (gpu == "on")
    batches = list(loader)
    assert len(batches) == len(loader) == 3 and len(batches[-1]) == 300 - 256
    x = torch.cat([b.x for b in batches])
    torch.testing.assert_close(x, _norm(digits, digits.test.images))
    assert torch.equal(torch.cat([b.index for b in batches]), torch.arange(300))
    assert torch.equal(torch.cat([b.y for b in batches]), digits.test.labels)
    assert all(b.aug is None and b.y.dtype == torch.long for b in batches)


def _reference_crop_flip(images: torch.Tensor, aug: torch.Tensor, pad: int) -> torch.Tensor:
    """Straight from the definition: zero-pad, slice the window at (dy, dx), flip columns."""
    padded = F.pad(images, (pad, pad, pad, pad))
    h, w = images.shape[-2:]
    out = []
    for img, (dy, dx, flip) in zip(padded, aug.tolist()):
        win = img[:, dy : dy + h, dx : dx + w]
        out.append(win.flip(-1) if flip else win)
    return torch.stack(out)


def test_standard_train_batches_identical_across_paths_and_valid_windows(digits) -> None:
    a = make_loader(digits, "train", 64, train=True, seed=5, gpu_resident="off")
    b = make_loader(digits, "train", 64, train=True, seed=5, gpu_resident="on")
    assert len(a) == len(b) == 300 // 64  # drop_last when training
    for epoch in (0, 3):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        for ba, bb in zip(a, b, strict=True):
            assert torch.equal(ba.index, bb.index) and torch.equal(ba.aug, bb.aug)
            torch.testing.assert_close(ba.x, bb.x, rtol=0, atol=0)
            # The view is exactly the window of the padded image the aug row names.
            ref = _reference_crop_flip(digits.train.images[ba.index], ba.aug, digits.pad)
            torch.testing.assert_close(ba.x, _norm(digits, ref))
            assert ba.aug[:, :2].min() >= 0 and ba.aug[:, :2].max() <= 2 * digits.pad


def test_epochs_are_a_function_of_seed_and_epoch(digits) -> None:
    def first(seed: int, epoch: int, gpu: str = "on") -> Batch:
        loader = make_loader(digits, "train", 32, train=True, seed=seed, gpu_resident=gpu)
        loader.set_epoch(epoch)
        return next(iter(loader))

    assert torch.equal(first(1, 2).x, first(1, 2).x)
    assert not torch.equal(first(1, 2).index, first(1, 3).index)
    assert not torch.equal(first(1, 2).index, first(2, 2).index)
    # Without set_epoch each full pass advances the epoch; set_epoch replays one.
    loader = make_loader(digits, "train", 100, train=True, seed=1, gpu_resident="off")
    e0 = [b.index for b in loader]
    e1 = [b.index for b in loader]
    assert not torch.equal(e0[0], e1[0])
    loader.set_epoch(0)
    assert all(torch.equal(p, q) for p, q in zip(e0, [b.index for b in loader]))
    fixed = make_loader(digits, "train", 100, train=True, seed=1, epoch_seeded=False)
    fixed.set_epoch(7)
    assert torch.equal(next(iter(fixed)).index, e0[0])


def test_supcon_views_both_paths_shapes_and_determinism(digits) -> None:
    for gpu in ("off", "on"):
        loader = make_loader(
            digits, "train", 50, train=True, views=2, augment="supcon", seed=0, gpu_resident=gpu
        )
        b1 = next(iter(loader))
        loader.set_epoch(0)
        b2 = next(iter(loader))
        assert b1.x.shape == (50, 2, 1, 16, 16) and b1.aug is None
        assert torch.isfinite(b1.x).all()
        assert torch.equal(b1.x, b2.x)
        assert not torch.equal(b1.x[:, 0], b1.x[:, 1])  # the two views differ


def test_standard_two_views_have_no_aug(digits) -> None:
    b = next(iter(make_loader(digits, "train", 16, train=True, views=2, gpu_resident="on")))
    assert b.x.shape == (16, 2, 1, 16, 16) and b.aug is None


@pytest.mark.parametrize("world", [2, 3])
def test_ddp_shards_partition_the_epoch(digits, world: int) -> None:
    shards = []
    for rank in range(world):
        loader = make_loader(
            digits, "train", 8, train=True, seed=3, rank=rank, world_size=world, drop_last=False
        )
        loader.set_epoch(4)
        shards.append(torch.cat([b.index for b in loader]))
        assert len(loader) == -(-(300 // world) // 8)
    assert all(len(s) == 300 // world for s in shards)
    joined = torch.cat(shards)
    assert len(set(joined.tolist())) == len(joined) == (300 // world) * world
    # Evaluation shards cover every sample exactly once.
    ev = [
        torch.cat(
            [b.index for b in make_loader(digits, "test", 7, train=False, rank=r, world_size=world)]
        )
        for r in range(world)
    ]
    assert sorted(torch.cat(ev).tolist()) == list(range(300))


def test_bad_arguments(digits) -> None:
    with pytest.raises(ValueError, match="augment"):
        make_loader(digits, "train", 8, train=True, augment="mixup")
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(digits, "train", 0, train=True)
    with pytest.raises(ValueError, match="rank"):
        make_loader(digits, "train", 8, train=True, rank=2, world_size=2)
    with pytest.raises(ValueError, match="split"):
        make_loader(digits, "holdout", 8, train=True)


def test_gpu_on_needs_in_memory_data(tmp_path) -> None:
    from torchvision.io import encode_jpeg

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(3):
            img = torch.zeros(3, 8, 8, dtype=torch.uint8)
            (tmp_path / c / f"{i}.jpg").write_bytes(encode_jpeg(img).numpy().tobytes())
    b = build_data(DataConfig(name="imagefolder", root=str(tmp_path), val_fraction=0), seed=0)
    with pytest.raises(ConfigError, match=r"data\.gpu_resident"):
        make_loader(b, "train", 2, train=True, gpu_resident="on")
    assert not make_loader(b, "train", 2, train=True, gpu_resident="auto").gpu_resident


def test_batch_from_any() -> None:
    x, y = torch.randn(4, 3, 2, 2), torch.tensor([0, 1, 2, 3], dtype=torch.int32)
    b = Batch.from_any((x, y), "cpu")
    assert b.y.dtype == torch.long and b.index is None and b.aug is None and len(b) == 4
    assert torch.equal(Batch.from_any([x, y, "extra"]).x, x)
    assert torch.equal(Batch.from_any({"image": x, "label": y}).y, y.long())
    same = Batch(x, y.long(), torch.arange(4), None)
    assert torch.equal(Batch.from_any(same).index, torch.arange(4))
    with pytest.raises(ValueError, match="labels"):
        Batch.from_any((x, torch.zeros(3)))
    with pytest.raises(ValueError):
        Batch.from_any({"x": x})
    with pytest.raises(ValueError):
        Batch.from_any(x)


def _epoch(bundle, gpu: str, augment: str, seed: int, aug_seed: int | None, views: int = 1):
    loader = make_loader(
        bundle,
        "train",
        64,
        train=True,
        views=views,
        augment=augment,
        seed=seed,
        aug_seed=aug_seed,
        gpu_resident=gpu,
        drop_last=False,
    )
    loader.set_epoch(2)
    batches = list(loader)
    index = torch.cat([b.index for b in batches])
    x = torch.cat([b.x for b in batches])
    by_index = x[torch.argsort(index)]  # row i: the view(s) of data set sample i
    return index, by_index, loader


@pytest.mark.parametrize(
    ("gpu", "augment"), [("off", "standard"), ("on", "standard"), ("off", "supcon")]
)
def test_aug_seed_moves_augmentation_only_and_seed_order_only(digits, gpu, augment) -> None:
    views = 2 if augment == "supcon" else 1
    order, views_of, _ = _epoch(digits, gpu, augment, seed=1, aug_seed=10, views=views)
    # Another aug_seed: same order, other views.
    order2, views_of2, _ = _epoch(digits, gpu, augment, seed=1, aug_seed=11, views=views)
    assert torch.equal(order, order2)
    differ = (views_of != views_of2).flatten(1).any(1).float().mean()
    assert differ > 0.5
    # Another seed: other order, each sample's views unchanged.
    order3, views_of3, _ = _epoch(digits, gpu, augment, seed=2, aug_seed=10, views=views)
    assert not torch.equal(order, order3) and torch.equal(order.sort().values, order3.sort().values)
    assert torch.equal(views_of, views_of3)


def test_aug_seed_on_the_gpu_supcon_path_fixes_the_parameter_stream(digits) -> None:
    """GPU SupCon parameters are drawn per batch slot: aug_seed alone fixes them, seed alone
    fixes the order."""

    def params(seed: int, aug_seed: int):
        _, _, loader = _epoch(digits, "on", "supcon", seed=seed, aug_seed=aug_seed, views=2)
        ep = loader._gpu.prepare(loader._plan(2))
        return ep.order, ep.supcon, ep.orders

    o1, p1, j1 = params(1, 10)
    o2, p2, j2 = params(2, 10)
    o3, p3, _ = params(1, 11)
    assert not torch.equal(o1, o2) and torch.equal(o1, o3)
    assert j1 == j2 and all(torch.equal(p1[k], p2[k]) for k in p1)
    assert not torch.equal(p1["box"], p3["box"])


def test_aug_seed_default_keeps_the_single_stream(digits) -> None:
    # None: order and augmentation both from seed, as before aug_seed existed; any int
    # (even equal to seed) gives the augmentation its own stream.
    a = make_loader(digits, "train", 64, train=True, seed=4, gpu_resident="on")
    b = make_loader(digits, "train", 64, train=True, seed=4, aug_seed=4, gpu_resident="on")
    pa, pb = a._plan(0), b._plan(0)
    assert torch.equal(pa.order, pb.order) and not torch.equal(pa.aug, pb.aug)
    g = torch.Generator().manual_seed(mix_seed(4, 0))
    torch.randperm(len(digits.train), generator=g)
    assert torch.equal(pa.aug, sample_crop_flip(len(digits.train), digits.pad, g).view(1, -1, 3))
    with pytest.raises(ValueError, match="aug_seed"):
        make_loader(digits, "train", 8, train=True, aug_seed=1.5)
