"""Generator-driven per-sample transforms of the DataLoader path: the crop box follows
torchvision's RandomResizedCrop, the SupCon view applies each op at its configured rate and
range, everything is a function of the sample's generator only, and the loader's views are
exactly those of a generator seeded by the epoch plan's per-sample seed."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from scipy.stats import ks_2samp
from torchvision import transforms as T
from torchvision.transforms.v2 import functional as TF

from supkd.data import DataConfig, build_data, make_loader
from supkd.data.sampling import make_plan, split_batches
from supkd.data.transforms import (
    CROP_FLIP_DRAWS,
    RESIZED_CROP_DRAWS,
    SUPCON_DRAWS,
    RandomResizedCropFlip,
    SupconAugment,
    resized_crop_box,
)


def _binomial_ok(k: int, n: int, p: float) -> bool:
    return abs(k - n * p) <= 5 * math.sqrt(n * p * (1 - p))  # 5 sigma: no flaky failures


@pytest.mark.parametrize(("height", "width", "scale"), [(32, 32, (0.2, 1.0)), (20, 48, (0.08, 1))])
def test_resized_crop_box_distribution_matches_torchvision(
    height: int, width: int, scale: tuple[float, float]
) -> None:
    n = 3000
    g = torch.Generator().manual_seed(0)
    ours = [
        resized_crop_box(torch.rand(RESIZED_CROP_DRAWS, generator=g).tolist(), height, width, scale)
        for _ in range(n)
    ]
    torch.manual_seed(0)
    img = torch.zeros(1, height, width)
    ref = [T.RandomResizedCrop.get_params(img, list(scale), [3 / 4, 4 / 3]) for _ in range(n)]
    for top, left, h, w in ours:
        assert top >= 0 and top + h <= height and left >= 0 and left + w <= width and h * w > 0

    def stats(boxes):
        t = torch.tensor(boxes, dtype=torch.float64)
        top, left, h, w = t.unbind(1)
        return {
            "area": h * w / (height * width),
            "aspect": w / h,
            "top": (top + 0.5) / (height - h + 1),
            "left": (left + 0.5) / (width - w + 1),
        }

    a, b = stats(ours), stats(ref)
    for key in a:
        # Two samples of one distribution: p is uniform; a wrong scale, ratio or corner
        # rule gives p ~ 0 at this size.
        assert ks_2samp(a[key].numpy(), b[key].numpy()).pvalue > 1e-4, key


def test_resized_crop_box_fallback_equals_torchvision() -> None:
    # No try fits a 4x64 image (every box of area >= 0.2 * 256 is taller than 4 at aspect
    # <= 4/3): the centered box of aspect 4/3 and full height, as torchvision.
    # Tall image: full width, height round(4 / (3/4)) = 5, centered: top (64 - 5) // 2.
    for height, width, expected in ((4, 64, (0, 29, 4, 5)), (64, 4, (29, 0, 5, 4))):
        img = torch.zeros(1, height, width)
        assert tuple(T.RandomResizedCrop.get_params(img, [0.2, 1.0], [3 / 4, 4 / 3])) == expected
        for u in (0.0, 0.5, 0.999):
            assert resized_crop_box([u] * RESIZED_CROP_DRAWS, height, width, (0.2, 1.0)) == expected


class _Spy:
    """Wraps torchvision functional ops to record their calls (op name, factor)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[list[tuple[str, float | None]]] = []
        for name in (
            "adjust_brightness",
            "adjust_contrast",
            "adjust_saturation",
            "adjust_hue",
            "rgb_to_grayscale",
            "horizontal_flip",
        ):
            monkeypatch.setattr(TF, name, self._wrap(name, getattr(TF, name)))

    def _wrap(self, name, fn):
        def f(x, *args, **kwargs):
            self.calls[-1].append((name, float(args[0]) if args else None))
            return fn(x, *args, **kwargs)

        return f


def test_supcon_view_rates_ranges_and_op_order(monkeypatch: pytest.MonkeyPatch) -> None:
    spy = _Spy(monkeypatch)
    aug = SupconAugment(16, 3)
    image = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    g = torch.Generator().manual_seed(1)
    n = 2000
    for _ in range(n):
        spy.calls.append([])
        out = aug(image, g)
        assert out.shape == (3, 16, 16) and out.dtype == torch.uint8
    names = [[c for c, _ in call] for call in spy.calls]
    jitter = [[c for c in ns if c.startswith("adjust")] for ns in names]
    assert _binomial_ok(sum(1 for j in jitter if j), n, 0.8)
    assert all(sorted(j) == sorted(set(j)) and len(j) in (0, 4) for j in jitter)
    assert _binomial_ok(sum("horizontal_flip" in ns for ns in names), n, 0.5)
    assert _binomial_ok(sum("rgb_to_grayscale" in ns for ns in names), n, 0.2)
    # Grayscale comes last, after the jitter.
    assert all(ns[-1] == "rgb_to_grayscale" for ns in names if "rgb_to_grayscale" in ns)
    # Every op is first a quarter of the time (a uniform random order).
    firsts = Counter(j[0] for j in jitter if j)
    applied = sum(firsts.values())
    assert len(firsts) == 4 and all(_binomial_ok(c, applied, 0.25) for c in firsts.values())
    factors: dict[str, list[float]] = {}
    for call in spy.calls:
        for name, f in call:
            if name.startswith("adjust"):
                factors.setdefault(name, []).append(f)
    for name in ("adjust_brightness", "adjust_contrast", "adjust_saturation"):
        assert 0.6 <= min(factors[name]) < 0.62 and 1.38 < max(factors[name]) <= 1.4
    assert -0.1 <= min(factors["adjust_hue"]) < -0.098 and 0.098 < max(factors["adjust_hue"]) <= 0.1


def test_supcon_view_on_one_channel_jitters_brightness_and_contrast_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spy = _Spy(monkeypatch)
    aug = SupconAugment(12, 1)
    g = torch.Generator().manual_seed(2)
    for _ in range(300):
        spy.calls.append([])
        assert aug(torch.randint(0, 256, (1, 8, 8), dtype=torch.uint8), g).shape == (1, 12, 12)
    used = {name for call in spy.calls for name, _ in call}
    assert used == {"adjust_brightness", "adjust_contrast", "horizontal_flip"}


def test_views_depend_on_the_generator_only() -> None:
    image = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    for t, draws in ((SupconAugment(16, 3), SUPCON_DRAWS), (RandomResizedCropFlip(8), None)):
        torch.manual_seed(0)
        state = torch.get_rng_state()
        a = [t(image, torch.Generator().manual_seed(s)) for s in range(20)]
        assert torch.equal(torch.get_rng_state(), state)  # global generator untouched
        torch.manual_seed(123)
        b = [t(image, torch.Generator().manual_seed(s)) for s in range(20)]
        assert all(torch.equal(x, y) for x, y in zip(a, b))
        assert len({x.numpy().tobytes() for x in a}) > 15  # and the seed matters
        if draws is not None:
            # A view draws a fixed count of uniforms, whatever ops it applied.
            g = torch.Generator().manual_seed(5)
            t(image, g)
            h = torch.Generator().manual_seed(5)
            torch.rand(draws, generator=h)
            assert torch.equal(torch.rand(3, generator=g), torch.rand(3, generator=h))
    assert CROP_FLIP_DRAWS == RESIZED_CROP_DRAWS + 1


@pytest.mark.filterwarnings("ignore::DeprecationWarning:torchvision")
def test_dataloader_supcon_views_come_from_the_plan_seeds() -> None:
    digits = build_data(DataConfig(name="digits", subset=120), seed=0)
    loader = make_loader(
        digits, "train", 40, train=True, views=2, augment="supcon", seed=3, gpu_resident="off"
    )
    loader.set_epoch(1)
    torch.manual_seed(0)
    got = list(loader)
    loader.set_epoch(1)
    torch.manual_seed(99)  # the global generator plays no part
    assert all(torch.equal(a.x, b.x) for a, b in zip(got, loader, strict=True))
    plan = make_plan(120, seed=3, epoch=1, shuffle=True, views=2, pad=digits.pad)
    aug = SupconAugment(digits.image_size, 1)
    m, s = digits.mean[0], digits.std[0]
    for batch, idx in zip(got, split_batches(plan.order, 40, True), strict=True):
        assert torch.equal(batch.index, idx)
        for row, i in zip(batch.x, idx.tolist()):
            g = torch.Generator().manual_seed(int(plan.seeds[i]))
            ref = torch.stack([aug(digits.train.images[i], g) for _ in range(2)])
            torch.testing.assert_close(row, (ref.float() / 255 - m) / s)
