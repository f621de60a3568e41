"""The ``data:`` augmentation options (flip, supcon_scale, supcon_flip, supcon_jitter,
supcon_grayscale) on both loader paths: validation, defaults equal to the fixed CIFAR recipe,
and each option doing exactly what it says while leaving the random stream aligned."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

import supkd.train.tasks  # noqa: F401  (registers the task sections config_from_dict reads)
from supkd.config import config_from_dict
from supkd.data import DataConfig, build_data, make_loader
from supkd.data.datasets import DataBundle, TensorImageDataset
from supkd.data.gpu import grayscale, sample_supcon, supcon_views
from supkd.data.sampling import make_plan, split_batches
from supkd.data.transforms import (
    CROP_FLIP_DRAWS,
    RESIZED_CROP_DRAWS,
    SUPCON_DRAWS,
    SUPCON_JITTER,
    SUPCON_P_GRAY,
    SUPCON_P_JITTER,
    SUPCON_SCALE,
    RandomResizedCropFlip,
    SupconAugment,
    SupconRecipe,
    resized_crop_box,
)
from supkd.errors import ConfigError
from supkd.train.teacher_cache import render_views

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:torchvision")
PATHS = ("off", "on")  # gpu_resident: DataLoader path, batched tensor path (on CPU)


def _digits(**options) -> DataBundle:
    return build_data(DataConfig(name="digits", subset=120, **options), seed=0)


def _rgb(images: torch.Tensor, **options) -> DataBundle:
    """A 3-channel in-memory bundle of ``images`` (N, 3, S, S) with the given options."""
    ds = TensorImageDataset(images, torch.arange(len(images)) % 4, list("abcd"))
    cfg = DataConfig(name="cifar10", **options)
    size = images.shape[-1]
    return DataBundle(
        "rgb", ds, None, ds, 4, ds.classes, size, (0.5,) * 3, (0.25,) * 3, 3, pad=2, config=cfg
    )


def _unnorm(bundle: DataBundle, x: torch.Tensor) -> torch.Tensor:
    m = torch.tensor(bundle.mean).view(-1, 1, 1)
    s = torch.tensor(bundle.std).view(-1, 1, 1)
    return x * s + m


def _epoch(bundle: DataBundle, gpu: str, **kw) -> list:
    loader = make_loader(bundle, "train", 40, train=True, seed=3, gpu_resident=gpu, **kw)
    loader.set_epoch(2)
    return list(loader)


# ------------------------------------------------------------------------ config
@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"flip": 1}, "data.flip"),
        ({"supcon_flip": "no"}, "data.supcon_flip"),
        ({"supcon_scale": [0.0, 1.0]}, "data.supcon_scale"),
        ({"supcon_scale": [0.5, 1.2]}, "data.supcon_scale"),
        ({"supcon_scale": [0.8, 0.5]}, "data.supcon_scale"),
        ({"supcon_scale": [0.5]}, "data.supcon_scale"),
        ({"supcon_scale": 0.5}, "data.supcon_scale"),
        ({"supcon_scale": [True, 1.0]}, "data.supcon_scale"),
        ({"supcon_jitter": -0.1}, "data.supcon_jitter"),
        ({"supcon_jitter": 1.5}, "data.supcon_jitter"),
        ({"supcon_jitter": "strong"}, "data.supcon_jitter"),
        ({"supcon_grayscale": -0.01}, "data.supcon_grayscale"),
        ({"supcon_grayscale": 1.01}, "data.supcon_grayscale"),
    ],
)
def test_bad_options_raise_config_error_naming_the_field(options: dict, field: str) -> None:
    # A bad element is named with its index (data.supcon_scale[0]).
    with pytest.raises(ConfigError, match=re.escape(f"'{field}") + r"(\[\d\])?'"):
        DataConfig(**options)


def test_yaml_config_accepts_options_and_rejects_bad_ones() -> None:
    cfg = config_from_dict(
        {"data": {"flip": False, "supcon_scale": [0.5, 1], "supcon_jitter": 0}}
    ).data
    assert cfg.flip is False and cfg.supcon_scale == [0.5, 1.0] and cfg.supcon_jitter == 0.0
    assert SupconRecipe.from_config(cfg) == SupconRecipe(scale=(0.5, 1.0), jitter=0.0)
    with pytest.raises(ConfigError, match=r"'data\.supcon_scale'"):
        config_from_dict({"data": {"supcon_scale": [0.9, 0.3]}})
    # Edges are allowed: a fixed scale, no jitter, always or never gray.
    DataConfig(supcon_scale=[1.0, 1.0], supcon_jitter=0.0, supcon_grayscale=1.0)
    DataConfig(supcon_scale=(0.01, 0.01), supcon_jitter=1, supcon_grayscale=0)


def test_defaults_are_the_fixed_cifar_recipe() -> None:
    cfg = DataConfig()
    assert cfg.flip is True
    r = SupconRecipe.from_config(cfg)
    assert r == SupconRecipe()
    assert r.scale == SUPCON_SCALE and r.flip is True
    assert r.strength == SUPCON_JITTER  # exact: hue s / 4 = 0.1 bit for bit
    assert r.p_jitter == SUPCON_P_JITTER and r.p_gray == SUPCON_P_GRAY
    aug = SupconAugment(16, 3)
    assert aug.scale == SUPCON_SCALE and aug.flip and aug.recipe == SupconRecipe()


# ------------------------------------------------------------------ standard flip
@pytest.mark.parametrize("gpu", PATHS)
def test_flip_off_never_flips_and_keeps_the_crops(gpu: str) -> None:
    on, off = _digits(), _digits(flip=False)
    batches_on, batches_off = _epoch(on, gpu), _epoch(off, gpu)
    assert len(batches_on) == len(batches_off) == 3
    flipped = 0
    for a, b in zip(batches_on, batches_off, strict=True):
        assert torch.equal(a.index, b.index)
        assert (b.aug[:, 2] == 0).all()
        assert torch.equal(a.aug[:, :2], b.aug[:, :2])  # same crops: the flips were drawn
        flip = a.aug[:, 2].bool()
        flipped += int(flip.sum())
        # Un-flipping the default view gives the no-flip view, pixel for pixel.
        undone = torch.where(flip.view(-1, 1, 1, 1), a.x.flip(-1), a.x)
        torch.testing.assert_close(b.x, undone, rtol=0, atol=0)
        # The teacher cache renders the same view from (index, aug) (flip column 0).
        ref = render_views(off.train.images[b.index], b.aug, off.pad)
        torch.testing.assert_close(_unnorm(off, b.x), ref.float() / 255, rtol=0, atol=1e-6)
    assert flipped > 30  # the default does flip about half of the 120


def test_flip_off_both_paths_identical() -> None:
    off = _digits(flip=False)
    for a, b in zip(_epoch(off, "off"), _epoch(off, "on"), strict=True):
        assert torch.equal(a.aug, b.aug)
        torch.testing.assert_close(a.x, b.x, rtol=0, atol=0)


def test_flip_off_in_random_resized_crop() -> None:
    """Image-folder path: the same crop, never mirrored; the draws are the same."""
    image = torch.randint(0, 256, (3, 20, 24), dtype=torch.uint8)
    on, off = RandomResizedCropFlip(12), RandomResizedCropFlip(12, flip=False)
    mirrored = 0
    for seed in range(40):
        u = torch.rand(CROP_FLIP_DRAWS, generator=torch.Generator().manual_seed(seed))
        a = on(image, torch.Generator().manual_seed(seed))
        b = off(image, torch.Generator().manual_seed(seed))
        flip = bool(u[RESIZED_CROP_DRAWS] < 0.5)
        mirrored += flip
        assert torch.equal(b, a.flip(-1) if flip else a)
    assert 5 < mirrored < 35


# -------------------------------------------------------------------- SupCon views
@pytest.mark.parametrize("gpu", PATHS)
def test_supcon_defaults_unchanged_when_spelled_out(gpu: str) -> None:
    plain = _digits()
    spelled = _digits(
        supcon_scale=[0.2, 1.0], supcon_flip=True, supcon_jitter=0.4, supcon_grayscale=0.2
    )
    kw = {"views": 2, "augment": "supcon"}
    for a, b in zip(_epoch(plain, gpu, **kw), _epoch(spelled, gpu, **kw), strict=True):
        torch.testing.assert_close(a.x, b.x, rtol=0, atol=0)


@pytest.mark.parametrize("gpu", PATHS)
def test_supcon_flip_off_is_the_default_view_unmirrored(gpu: str) -> None:
    """Brightness and contrast commute with a mirror, so with the same draws the no-flip view
    is the default view mirrored back wherever the default flipped."""
    on, off = _digits(), _digits(supcon_flip=False)
    kw = {"views": 2, "augment": "supcon"}
    a_all, b_all = _epoch(on, gpu, **kw), _epoch(off, gpu, **kw)
    same = mirrored = 0
    for a, b in zip(a_all, b_all, strict=True):
        for va, vb in zip(a.x.flatten(0, 1), b.x.flatten(0, 1)):
            # (float slack: the contrast's mean sums the pixels in another order)
            if torch.allclose(va, vb, rtol=0, atol=1e-6):
                same += 1
            else:
                torch.testing.assert_close(vb, va.flip(-1), rtol=0, atol=1e-6)
                mirrored += 1
    assert same > 40 and mirrored > 40  # about half of the 240 views each


@pytest.mark.parametrize("gpu", PATHS)
def test_identity_recipe_returns_the_images(gpu: str) -> None:
    """Scale [1, 1], no flip, no jitter: every view is the whole image, unchanged."""
    bundle = _digits(supcon_scale=[1.0, 1.0], supcon_flip=False, supcon_jitter=0.0)
    for b in _epoch(bundle, gpu, views=2, augment="supcon"):
        ref = bundle.train.images[b.index].float() / 255
        for v in range(2):
            torch.testing.assert_close(_unnorm(bundle, b.x[:, v]), ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("gpu", PATHS)
@pytest.mark.parametrize("p_gray", [0.0, 1.0])
def test_grayscale_probability_on_three_channels(gpu: str, p_gray: float) -> None:
    images = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)
    bundle = _rgb(
        images,
        supcon_scale=[1.0, 1.0],
        supcon_flip=False,
        supcon_jitter=0.0,
        supcon_grayscale=p_gray,
    )
    (batch,) = _epoch(bundle, gpu, views=2, augment="supcon")
    src = images[batch.index].float() / 255
    want = grayscale(src).expand_as(src) if p_gray == 1.0 else src
    # The DataLoader path grays in uint8 (torchvision rounds the luma): one level of slack.
    atol = 1 / 255 + 1e-6 if (gpu == "off" and p_gray == 1.0) else 1e-6
    for v in range(2):
        torch.testing.assert_close(_unnorm(bundle, batch.x[:, v]), want, rtol=0, atol=atol)


def test_grayscale_rate_of_the_sampler() -> None:
    g = torch.Generator().manual_seed(0)
    params, _ = sample_supcon(20_000, 8, 8, g, SupconRecipe(p_gray=0.6))
    assert abs(params["gray"].float().mean().item() - 0.6) < 0.02


@pytest.mark.parametrize("gpu", PATHS)
@pytest.mark.parametrize("jitter", [0.0, 0.1, 0.4])
def test_jitter_strength_bounds_the_brightness(gpu: str, jitter: float) -> None:
    """On a constant image only brightness acts (contrast keeps a flat image): each view is
    100 * b with b ~ U[1 - s, 1 + s] (with p 0.8), whatever the crop."""
    images = torch.full((120, 1, 8, 8), 100, dtype=torch.uint8)
    ds = TensorImageDataset(images, torch.arange(120) % 4, list("abcd"))
    cfg = DataConfig(name="digits", supcon_jitter=jitter)
    bundle = DataBundle("flat", ds, None, ds, 4, ds.classes, 8, (0.0,), (1.0,), 1, config=cfg)
    x = torch.cat([b.x for b in _epoch(bundle, gpu, views=2, augment="supcon")]) * 255
    level = x.amax(dim=(-1, -2, -3)).flatten()  # (B * V,) the view's (constant) level
    assert torch.allclose(level, x.amin(dim=(-1, -2, -3)).flatten(), atol=1e-3)
    lo, hi = 100 * (1 - jitter), 100 * (1 + jitter)
    assert level.min() >= lo - 1 and level.max() <= hi + 1
    if jitter == 0:
        assert torch.allclose(level, torch.full_like(level, 100.0), atol=1e-3)
    else:  # the whole range is used, not a narrower one
        assert level.min() < 100 - 0.7 * 100 * jitter and level.max() > 100 + 0.7 * 100 * jitter
        assert 0.1 < (level.sub(100).abs() < 0.05).float().mean() < 0.35  # ~ 1 - 0.8 kept


@pytest.mark.parametrize("scale", [(0.5, 0.7), (0.9, 1.0), (0.2, 0.3)])
def test_crop_boxes_respect_the_scale(scale: tuple[float, float]) -> None:
    """Both samplers (batched: sample_supcon; per sample: resized_crop_box) give crop areas
    within the scale range, up to the rounding of h and w to pixels, spread over it."""
    H = W = 64
    n = 4000
    params, _ = sample_supcon(n, H, W, torch.Generator().manual_seed(1), SupconRecipe(scale))
    box = params["box"]
    batched = box[:, 2] * box[:, 3] / (H * W)
    assert (box[:, :2] >= 0).all() and (box[:, 0] + box[:, 2] <= H).all()
    assert (box[:, 1] + box[:, 3] <= W).all()
    g = torch.Generator().manual_seed(2)
    per_sample = []
    for _ in range(n // 4):
        u = torch.rand(RESIZED_CROP_DRAWS, generator=g).tolist()
        _, _, h, w = resized_crop_box(u, H, W, scale)
        per_sample.append(h * w / (H * W))
    slack = 2 * 0.5 * (2 * 0.5) / 64 + 1e-3  # rounding h, w by <= 0.5 px each (+ product)
    for areas in (batched, torch.tensor(per_sample)):
        assert areas.min() >= scale[0] - slack and areas.max() <= scale[1] + slack
        width = scale[1] - scale[0]
        assert areas.min() < scale[0] + 0.1 * width + slack
        assert areas.max() > scale[1] - 0.1 * width - slack
        # Uniform in area: the mean is the middle (torchvision's RandomResizedCrop).
        assert abs(areas.mean().item() - sum(scale) / 2) < 0.02


@pytest.mark.parametrize("gpu", PATHS)
def test_loader_renders_the_configured_recipe(gpu: str) -> None:
    """The loader's SupCon batches are the reference views of the config's recipe: per
    sample (DataLoader path) or per batch from the epoch's generator (tensor path)."""
    cfg = {"supcon_scale": [0.5, 0.8], "supcon_flip": False, "supcon_jitter": 0.1}
    bundle = _digits(**cfg)
    recipe = SupconRecipe(scale=(0.5, 0.8), flip=False, jitter=0.1)
    got = _epoch(bundle, gpu, views=2, augment="supcon")
    plan = make_plan(120, seed=3, epoch=2, shuffle=True, views=2, pad=bundle.pad)
    m, s = bundle.mean[0], bundle.std[0]
    per_sample = SupconAugment(bundle.image_size, 1, recipe)
    for batch, idx in zip(got, split_batches(plan.order, 40, True), strict=True):
        assert torch.equal(batch.index, idx)
        if gpu == "on":
            ref = supcon_views(bundle.train.images[idx], 2, plan.generator, recipe=recipe)
        else:
            views = []
            for i in idx.tolist():
                g = torch.Generator().manual_seed(int(plan.seeds[i]))
                views.append(torch.stack([per_sample(bundle.train.images[i], g) for _ in "ab"]))
            ref = torch.stack(views).float() / 255
        torch.testing.assert_close(batch.x, (ref - m) / s, rtol=1e-6, atol=1e-6)
    # And the recipe mattered: the default recipe gives other views.
    default = _epoch(_digits(), gpu, views=2, augment="supcon")
    assert not torch.equal(default[0].x, got[0].x)


def test_draw_counts_do_not_depend_on_the_recipe() -> None:
    """Whatever the options, a view consumes the same numbers, so streams stay aligned."""
    image = torch.randint(0, 256, (3, 12, 12), dtype=torch.uint8)
    recipes = [
        SupconRecipe(),
        SupconRecipe(scale=(1.0, 1.0), flip=False, jitter=0.0, p_gray=0.0),
        dataclasses.replace(SupconRecipe(), p_gray=1.0, jitter=1.0),
    ]
    for recipe in recipes:
        g = torch.Generator().manual_seed(3)
        SupconAugment(12, 3, recipe)(image, g)
        h = torch.Generator().manual_seed(3)
        torch.rand(SUPCON_DRAWS, generator=h)
        assert torch.equal(torch.rand(4, generator=g), torch.rand(4, generator=h))
        g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        sample_supcon(30, 12, 12, g1, recipe)
        sample_supcon(30, 12, 12, g2)
        assert torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g2))


def test_rgb_grayscale_matches_torchvision_at_p1() -> None:
    """Per-sample path at p_gray 1: torchvision's rgb_to_grayscale of the (identity) view."""
    image = torch.randint(0, 256, (3, 10, 10), dtype=torch.uint8)
    recipe = SupconRecipe(scale=(1.0, 1.0), flip=False, jitter=0.0, p_gray=1.0)
    out = SupconAugment(10, 3, recipe)(image, torch.Generator().manual_seed(0))
    assert torch.equal(out, TF.rgb_to_grayscale(image, num_output_channels=3))
