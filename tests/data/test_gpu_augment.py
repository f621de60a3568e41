"""Batched GPU-path augmentation, run on CPU: valid crops, flip rate, jitter ranges, and
agreement with torchvision's per-image definitions."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from supkd.data.gpu import (
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    crop_flip_batch,
    grayscale,
    hsv_to_rgb,
    resized_crop_flip,
    rgb_to_hsv,
    sample_jitter,
    sample_resized_crop,
    supcon_views,
)
from supkd.data.sampling import sample_crop_flip
from supkd.data.transforms import crop_flip


def _binomial_ok(k: int, n: int, p: float) -> bool:
    return abs(k - n * p) <= 5 * math.sqrt(n * p * (1 - p))  # 5 sigma: no flaky failures


def test_crop_flip_batch_matches_per_image_and_flip_rate() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 10, 10), dtype=torch.uint8, generator=g)
    aug = sample_crop_flip(64, 3, g)
    out = crop_flip_batch(images, aug, pad=3)
    for i in range(64):
        assert torch.equal(out[i], crop_flip(images[i], *aug[i].tolist(), pad=3))
    big = sample_crop_flip(20_000, 4, g)
    assert _binomial_ok(int(big[:, 2].sum()), 20_000, 0.5)
    assert big[:, :2].min() == 0 and big[:, :2].max() == 8
    # Each of the 9 offsets is equally likely.
    counts = torch.bincount(big[:, 0], minlength=9)
    assert all(_binomial_ok(int(c), 20_000, 1 / 9) for c in counts)


def test_resized_crop_boxes_valid_and_in_range() -> None:
    g = torch.Generator().manual_seed(1)
    box = sample_resized_crop(5000, 32, 32, g)
    top, left, h, w = box.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (h >= 1).all() and (w >= 1).all()
    assert (top + h <= 32).all() and (left + w <= 32).all()
    area = h * w / 1024
    # Rounding of the sides moves the area a little beyond [0.2, 1].
    assert area.min() >= 0.17 and area.max() <= 1.0
    ratio = w / h
    assert ratio.min() >= 3 / 4 * 0.8 and ratio.max() <= 4 / 3 * 1.25
    assert (area < 0.5).float().mean() > 0.2  # the scale range is really used


def test_resized_crop_flip_equals_torchvision() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.rand(12, 3, 16, 16, generator=g)
    box = sample_resized_crop(12, 16, 16, g)
    flip = torch.arange(12) % 2 == 0
    out = resized_crop_flip(x, box, flip, 16)
    for i in range(12):
        top, left, h, w = (int(v) for v in box[i])
        ref = TF.resized_crop(x[i], top, left, h, w, [16, 16], antialias=False)
        if flip[i]:
            ref = TF.horizontal_flip(ref)
        torch.testing.assert_close(out[i], ref, atol=1e-5, rtol=0)


def test_color_ops_equal_torchvision() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.rand(6, 3, 8, 8, generator=g)
    f = torch.tensor([0.6, 0.8, 1.0, 1.1, 1.3, 1.4])
    hue = torch.tensor([-0.1, -0.05, 0.0, 0.02, 0.07, 0.1])
    for i in range(6):
        fi = float(f[i])
        torch.testing.assert_close(
            adjust_brightness(x[i : i + 1], f[i : i + 1])[0], TF.adjust_brightness(x[i], fi)
        )
        torch.testing.assert_close(
            adjust_contrast(x[i : i + 1], f[i : i + 1])[0], TF.adjust_contrast(x[i], fi)
        )
        torch.testing.assert_close(
            adjust_saturation(x[i : i + 1], f[i : i + 1])[0], TF.adjust_saturation(x[i], fi)
        )
        torch.testing.assert_close(
            adjust_hue(x[i : i + 1], hue[i : i + 1])[0],
            TF.adjust_hue(x[i], float(hue[i])),
            atol=1e-5,
            rtol=0,
        )
    torch.testing.assert_close(grayscale(x), TF.rgb_to_grayscale(x))
    torch.testing.assert_close(hsv_to_rgb(rgb_to_hsv(x)), x, atol=1e-6, rtol=0)


def test_jitter_parameters_stay_in_configured_ranges() -> None:
    g = torch.Generator().manual_seed(4)
    p = sample_jitter(20_000, g)
    for key in ("brightness", "contrast", "saturation"):
        assert p[key].min() >= 0.6 and p[key].max() <= 1.4
        assert p[key].min() < 0.62 and p[key].max() > 1.38  # the whole range is used
    assert p["hue"].abs().max() <= 0.1 and p["hue"].abs().max() > 0.098
    assert _binomial_ok(int(p["apply"].sum()), 20_000, 0.8)
    assert sorted(p["order"].tolist()) == [0, 1, 2, 3]


def test_supcon_views_range_grayscale_rate_and_seeding() -> None:
    images = torch.randint(
        0, 256, (200, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(5)
    )
    v1 = supcon_views(images, 2, torch.Generator().manual_seed(9))
    v2 = supcon_views(images, 2, torch.Generator().manual_seed(9))
    assert v1.shape == (200, 2, 3, 8, 8) and torch.equal(v1, v2)
    assert v1.min() >= 0 and v1.max() <= 1
    gray = ((v1[:, :, 0] == v1[:, :, 1]) & (v1[:, :, 1] == v1[:, :, 2])).flatten(2).all(-1)
    assert _binomial_ok(int(gray.sum()), 400, 0.2)
    one = supcon_views(images[:20, :1], 3, torch.Generator().manual_seed(0))
    assert one.shape == (20, 3, 1, 8, 8)


def test_crop_flip_rejects_nothing_outside_window() -> None:
    # The corner crop (0, 0) of a padded image: the first `pad` rows/columns are zeros.
    img = torch.full((1, 1, 6, 6), 7, dtype=torch.uint8)
    out = crop_flip_batch(img, torch.tensor([[0, 0, 0]]), pad=2)
    assert (
        out[0, 0, :2].eq(0).all() and out[0, 0, :, :2].eq(0).all() and out[0, 0, 2:, 2:].eq(7).all()
    )
    out = crop_flip_batch(img, torch.tensor([[4, 4, 1]]), pad=2)
    assert out[0, 0, 4:].eq(0).all() and out[0, 0, :, :2].eq(0).all()  # flipped: zeros on the left


@pytest.mark.parametrize("views", [1, 2])
def test_supcon_views_on_one_channel(views: int) -> None:
    images = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    out = supcon_views(images, views, torch.Generator().manual_seed(0), size=12)
    assert out.shape == (5, views, 1, 12, 12)
