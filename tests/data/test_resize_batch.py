"""``data.resize``: images held at their own size and each batch resized on the device
(``batch``), on both loader paths, against a resize at load (``load``)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from supkd.config import DataConfig
from supkd.data import build_data, make_loader
from supkd.data.gpu import crop_flip_batch
from supkd.data.transforms import normalize_batch, resize_batch
from supkd.errors import ConfigError


def _bundle(**kw):
    cfg = DataConfig(name="digits", subset=40, val_fraction=0.0, num_workers=0, **kw)
    return build_data(cfg, seed=0)


def test_auto_resizes_per_batch_only_when_upsampling():
    up = _bundle(image_size=32)  # digits are held at 16 pixels
    assert up.image_size == 32 and up.stored_size == 16 and up.resize_to == 32
    assert up.train.images.shape[-1] == 16 and up.pad == 2  # the native pad: 50 views
    down = _bundle(image_size=8)  # shrinking once at load is cheaper: load
    assert down.resize_to is None and down.train.images.shape[-1] == 8 and down.pad == 1
    load = _bundle(image_size=32, resize="load")
    assert load.resize_to is None and load.train.images.shape[-1] == 32 and load.pad == 4
    forced = _bundle(image_size=8, resize="batch")
    assert forced.resize_to == 8 and forced.train.images.shape[-1] == 16
    # The statistics are those of the held images either way (a resize keeps the mean).
    assert up.mean == pytest.approx(_bundle().mean)


def test_resize_batch_is_bilinear_upsampling():
    x = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4)
    ref = F.interpolate(x.float(), size=(8, 8), mode="bilinear", align_corners=False)
    assert torch.allclose(resize_batch(x, 8), ref, atol=1e-4)
    two_views = torch.stack([x, x.flip(-1)], 1)  # (B, V, C, H, W)
    assert resize_batch(two_views, 8).shape == (1, 2, 1, 8, 8)
    assert resize_batch(x, 4).dtype == torch.float32


@pytest.mark.parametrize("augment", ["standard", "none"])
def test_both_paths_give_the_native_views_resized(augment):
    bundle = _bundle(image_size=32)
    train = augment == "standard"
    batches = {
        gpu: list(make_loader(bundle, "train", 16, train=train, augment=augment, seed=3,
                              gpu_resident=gpu))
        for gpu in ("off", "on")
    }
    for a, b in zip(batches["off"], batches["on"]):
        assert a.x.shape[1:] == (1, 32, 32)
        torch.testing.assert_close(a.x, b.x, rtol=0, atol=1e-5)
        held = bundle.train.images[a.index]
        if train:
            # The crop + flip of the 16-pixel image (Batch.aug keys), then the resize.
            assert torch.equal(a.aug, b.aug) and int(a.aug[:, :2].max()) <= 2 * bundle.pad
            held = crop_flip_batch(held, a.aug, bundle.pad)
        expect = normalize_batch(resize_batch(held, 32), bundle.mean, bundle.std)
        torch.testing.assert_close(a.x, expect, rtol=0, atol=1e-5)


@pytest.mark.parametrize("gpu", ["off", "on"])
def test_supcon_views_render_at_the_network_size(gpu):
    bundle = _bundle(image_size=32)
    batch = next(iter(make_loader(bundle, "train", 8, train=True, views=2, augment="supcon",
                                  gpu_resident=gpu)))
    assert batch.x.shape == (8, 2, 1, 32, 32)


def test_cutout_erases_at_the_network_size():
    bundle = _bundle(image_size=32, cutout=8)
    a, b = (next(iter(make_loader(bundle, "train", 8, train=True, seed=1, gpu_resident=gpu)))
            for gpu in ("off", "on"))
    torch.testing.assert_close(a.x, b.x, rtol=0, atol=1e-5)
    zeros = (a.x == 0).flatten(1).sum(1)  # an 8x8 square of the 32x32 batch, clipped
    assert a.aug is None and int(zeros.max()) <= 64 and int(zeros.min()) > 0


def test_batch_resize_is_refused_for_image_folders(tmp_path):
    with pytest.raises(ConfigError, match=r"'data.resize': 'batch' is for in-memory"):
        build_data(DataConfig(name="imagefolder", root=str(tmp_path), image_size=64,
                              resize="batch"))
