"""GPU-resident loading: the uint8 data set lives on the device and is augmented there in
batches with per-sample random parameters.

Backend choice (benchmarks/augment_throughput.py, SupCon two-view batch of 512 CIFAR
images): plain tensor ops here vs kornia.augmentation (RandomResizedCrop + flip +
ColorJitter + RandomGrayscale). On the 2-core CPU the tensor path made 570 images/s and
kornia 396 (the tensor path crops and flips in one grid_sample and computes the hue shift in
closed form; kornia validates parameters per op and warps with per-sample 3x3 matrices), so
the tensor path is kept. On an H200 the tensor path made 230,000 images/s at batch 512 and
586,000 at batch 4096 (kornia was not installed on that machine, so not compared there).
Owning the ops also lets the crop parameters come from our seeded epoch plan, so this path
yields the same pad-crop + flip batches as the DataLoader path (with or without cutout,
whose centres are also in the plan). The ops follow
torchvision's definitions (tests compare them with torchvision.transforms.v2.functional).

The random parameters are drawn on the CPU from the epoch's generator (a few numbers per
image), so a run is reproducible and device-independent, and they go to the device once per
epoch together with the epoch's order: the per-batch path only slices device tensors. A
per-batch copy from pageable host memory waits for all queued device work, which made a
GPU training step host-bound (measured on an H200: the same step time at batch 256 and 512).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from supkd.data.batch import Batch
from supkd.data.sampling import EpochPlan, num_batches
from supkd.data.transforms import (
    SUPCON_JITTER,
    SUPCON_P_JITTER,
    SUPCON_RATIO,
    SUPCON_SCALE,
    SupconRecipe,
    center_fallback_box,
    erase,
    normalization_affine,
    resize_batch,
)

# ITU-R 601-2 luma, the weights torchvision's rgb_to_grayscale uses.
_LUMA = (0.2989, 0.587, 0.114)


# ----------------------------------------------------------------------------- crop + flip
def crop_flip_batch(images: torch.Tensor, aug: torch.Tensor, pad: int) -> torch.Tensor:
    """Pad-crop + flip a batch in one gather: uint8 (B, C, H, W), aug (B, 3) ``[dy, dx,
    flip]`` -> (B, C, H, W), equal to :func:`supkd.data.transforms.crop_flip` per sample.

    Output pixel (r, c) reads input (dy + r - pad, dx + c' - pad) with c' = W-1-c when
    flipped, and is 0 where that falls in the padding; no padded copy of the data set is
    ever made (it would cost 56% more device memory at 32x32, pad 4).
    """
    B, C, H, W = images.shape
    aug = aug.to(images.device)
    dy, dx, flip = aug[:, 0:1], aug[:, 1:2], aug[:, 2:3].bool()
    ar = torch.arange(H, device=images.device)
    ac = torch.arange(W, device=images.device)
    rows = dy - pad + ar  # (B, H)
    cols = dx - pad + torch.where(flip, W - 1 - ac, ac)  # (B, W)
    valid = ((rows >= 0) & (rows < H))[:, :, None] & ((cols >= 0) & (cols < W))[:, None, :]
    r = rows.clamp(0, H - 1)[:, None, :, None].expand(B, C, H, W)
    c = cols.clamp(0, W - 1)[:, None, None, :].expand(B, C, H, W)
    out = images.gather(2, r).gather(3, c)
    return out * valid[:, None].to(out.dtype)


# ------------------------------------------------------------------------------- cutout
def cutout_mask_batch(centres: torch.Tensor, height: int, width: int, length: int) -> torch.Tensor:
    """Cutout squares of a batch (DeVries & Taylor, 2017, arXiv:1708.04552): centres (B, 2)
    long ``[cy, cx]`` -> bool (B, H, W), True on rows ``cy - length // 2`` to ``cy - length
    // 2 + length - 1`` and the same columns; the parts outside the image simply match no
    pixel (the clipping). Equal to :func:`supkd.data.transforms.cutout_mask` per sample,
    computed on the centres' device from two comparisons (no host read, no copy)."""
    top = centres[:, 0:1] - length // 2  # (B, 1)
    left = centres[:, 1:2] - length // 2
    r = torch.arange(height, device=centres.device)
    c = torch.arange(width, device=centres.device)
    rows = (r >= top) & (r < top + length)  # (B, H)
    cols = (c >= left) & (c < left + length)  # (B, W)
    return rows[:, :, None] & cols[:, None, :]


# ------------------------------------------------------------------- random resized crop
def sample_resized_crop(
    n: int,
    height: int,
    width: int,
    generator: torch.Generator,
    scale: tuple[float, float] = SUPCON_SCALE,
    ratio: tuple[float, float] = SUPCON_RATIO,
    attempts: int = 10,
) -> torch.Tensor:
    """(n, 4) float ``[top, left, h, w]`` crop boxes drawn as in torchvision's
    RandomResizedCrop.get_params, vectorized: ``attempts`` tries of area ~ U(scale) and log
    aspect ~ U(log ratio), the first that fits wins; if none fits, the centered largest box
    of aspect ratio within ``ratio`` (torchvision's fallback)."""
    area = height * width
    target = area * torch.empty(n, attempts).uniform_(*scale, generator=generator)
    log_r = torch.empty(n, attempts).uniform_(
        math.log(ratio[0]), math.log(ratio[1]), generator=generator
    )
    aspect = torch.exp(log_r)
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.argmax(ok.int(), dim=1)  # index of the first fitting try (0 if none)
    any_ok = ok.any(dim=1)
    pick = first[:, None]
    w = w.gather(1, pick).squeeze(1)
    h = h.gather(1, pick).squeeze(1)
    u = torch.rand(n, 2, generator=generator)
    top = torch.floor(u[:, 0] * (height - h + 1))
    left = torch.floor(u[:, 1] * (width - w + 1))
    ftop, fleft, fh, fw = center_fallback_box(height, width, ratio)
    box = torch.stack([top, left, h, w], dim=1)
    fallback = torch.tensor([ftop, fleft, fh, fw], dtype=box.dtype)
    return torch.where(any_ok[:, None], box, fallback)


def resized_crop_flip(
    x: torch.Tensor, box: torch.Tensor, flip: torch.Tensor, size: int
) -> torch.Tensor:
    """Crop ``box`` (B, 4) ``[top, left, h, w]`` of each float image (B, C, H, W), resize it
    bilinearly to (size, size) and flip where ``flip`` (B,) is true, in one grid_sample.

    Sample points follow ``interpolate(align_corners=False)`` on the crop (source coordinate
    ``top + (r + 0.5) * h / size - 0.5``, clamped to the crop), so the result equals
    torchvision's ``resized_crop(..., antialias=False)``; antialiasing is moot as crops of at
    most the image size are only ever enlarged here.
    """
    B, _, H, W = x.shape
    box = box.to(device=x.device, dtype=torch.float32)
    top, left, h, w = box.unbind(1)
    t = (torch.arange(size, device=x.device, dtype=torch.float32) + 0.5) / size
    ys = top[:, None] + (t[None, :] * h[:, None] - 0.5).clamp(min=0)
    ys = torch.minimum(ys, (top + h - 1)[:, None])
    xs = left[:, None] + (t[None, :] * w[:, None] - 0.5).clamp(min=0)
    xs = torch.minimum(xs, (left + w - 1)[:, None])
    xs = torch.where(flip.to(x.device)[:, None], xs.flip(1), xs)
    # Pixel centers -> grid_sample's [-1, 1] coordinates (align_corners=False).
    gy = (ys + 0.5) * (2.0 / H) - 1.0
    gx = (xs + 0.5) * (2.0 / W) - 1.0
    grid = torch.stack(
        [gx[:, None, :].expand(B, size, size), gy[:, :, None].expand(B, size, size)], dim=-1
    )
    return F.grid_sample(
        x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False
    )


# ------------------------------------------------------------------------- color jitter
def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) float -> (B, 1, H, W) luma (torchvision's weights)."""
    r, g, b = x.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)


def _hue_chroma(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, 3, H, W) RGB in [0, 1] -> hue in [0, 1), chroma max - min, value max; each
    (B, H, W). The hue is torchvision's (_rgb2hsv) written with `where` instead of sums of
    masked terms (same value, fewer passes over memory)."""
    r, g, b = x.unbind(1)
    maxc = torch.amax(x, dim=1)
    minc = torch.amin(x, dim=1)
    cr = maxc - minc
    crd = torch.where(cr > 0, cr, torch.ones_like(cr))
    h6 = torch.where(
        maxc == r, (g - b) / crd, torch.where(maxc == g, 2.0 + (b - r) / crd, 4.0 + (r - g) / crd)
    )
    return torch.remainder(h6 / 6.0, 1.0), cr, maxc


def _from_hue_chroma(h: torch.Tensor, cr: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_hue_chroma`: channel n of (5, 3, 1) is v - C * clamp(min(k, 4 - k),
    0, 1) with k = (n + 6h) mod 6 (the closed form of HSV -> RGB; equal to torchvision's
    sector table, and one pass over the three channels at once)."""
    # arange, not torch.tensor([5., 3., 1.]): made on the device, no host-to-device copy.
    n = torch.arange(5.0, 0.0, -2.0, device=h.device).view(1, 3, 1, 1)
    k = torch.remainder(n + 6.0 * h.unsqueeze(1), 6.0)
    m = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return (v.unsqueeze(1) - cr.unsqueeze(1) * m).clamp_(0.0, 1.0)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> HSV (B, 3, H, W), hue in [0, 1) (torchvision's _rgb2hsv)."""
    h, cr, v = _hue_chroma(x)
    s = cr / torch.where(v > 0, v, torch.ones_like(v))
    return torch.stack([h, s, v], dim=1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv` (torchvision's _hsv2rgb)."""
    h, s, v = x.unbind(1)
    return _from_hue_chroma(h, s * v, v)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """x * b, clamped to [0, 1]; factor (B,)."""
    return (x * factor.view(-1, 1, 1, 1)).clamp_(0.0, 1.0)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the mean gray level of each image: c * x + (1 - c) * mean(gray(x))."""
    gray = grayscale(x) if x.shape[1] == 3 else x
    mean = gray.mean(dim=(1, 2, 3), keepdim=True)
    f = factor.view(-1, 1, 1, 1)
    return (f * x + (1.0 - f) * mean).clamp_(0.0, 1.0)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the image's grayscale: s * x + (1 - s) * gray(x)."""
    f = factor.view(-1, 1, 1, 1)
    return (f * x + (1.0 - f) * grayscale(x)).clamp_(0.0, 1.0)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by ``shift`` (B,) turns (in [-0.5, 0.5]) in HSV space."""
    h, cr, v = _hue_chroma(x)
    return _from_hue_chroma(h + shift.view(-1, 1, 1), cr, v)


def sample_jitter(
    n: int,
    generator: torch.Generator,
    strength: tuple[float, float, float, float] = SUPCON_JITTER,
    p: float = SUPCON_P_JITTER,
) -> dict[str, torch.Tensor]:
    """Per-sample ColorJitter parameters as torchvision draws them: factors ~ U[1 - s, 1 + s]
    for brightness/contrast/saturation, hue shift ~ U[-h, h], applied with probability p.
    Also one random order of the four ops for the batch (torchvision draws one per image;
    one per batch keeps the batch on the device without data-dependent indexing, and each
    image's order is still uniformly random)."""
    b, c, s, h = strength
    u = torch.rand(n, 5, generator=generator)
    return {
        "brightness": 1 - b + 2 * b * u[:, 0],
        "contrast": 1 - c + 2 * c * u[:, 1],
        "saturation": 1 - s + 2 * s * u[:, 2],
        "hue": -h + 2 * h * u[:, 3],
        "apply": u[:, 4] < p,
        "order": torch.randperm(4, generator=generator),
    }


def color_jitter(
    x: torch.Tensor, params: dict[str, torch.Tensor], order: Sequence[int] | None = None
) -> torch.Tensor:
    """Apply :func:`sample_jitter`'s parameters to float images (B, C, H, W) in [0, 1]; images
    whose ``apply`` is false are returned unchanged. One channel: brightness and contrast.
    ``order``: the op order as Python ints (None: ``params["order"]``, a CPU tensor)."""
    dev = x.device
    ops = {
        0: (adjust_brightness, "brightness"),
        1: (adjust_contrast, "contrast"),
        2: (adjust_saturation, "saturation"),
        3: (adjust_hue, "hue"),
    }
    out = x
    for k in params["order"].tolist() if order is None else order:
        fn, key = ops[k]
        if x.shape[1] != 3 and k >= 2:
            continue
        out = fn(out, params[key].to(dev))
    return torch.where(params["apply"].to(dev).view(-1, 1, 1, 1), out, x)


#: Per-view tensors of :func:`sample_supcon` (the jitter order is kept apart: it is one
#: permutation per batch, not a per-view value).
SUPCON_KEYS = ("box", "flip", "brightness", "contrast", "saturation", "hue", "apply", "gray")


def sample_supcon(
    n: int,
    height: int,
    width: int,
    generator: torch.Generator,
    recipe: SupconRecipe | None = None,
) -> tuple[dict[str, torch.Tensor], list[int]]:
    """The random parameters of ``n`` SupCon views of (height, width) images, drawn from
    ``generator`` in a fixed order (crop box, flip, jitter, grayscale): ``(params, order)``
    with ``params[k]`` of first dimension n for k in :data:`SUPCON_KEYS` (box (n, 4) float,
    flip/apply/gray (n,) bool, jitter factors (n,) float) and the jitter op ``order``.
    ``recipe`` (None: the CIFAR recipe) sets the crop scale, flip, jitter strength and gray
    probability; the same numbers are drawn whatever it says (a disabled flip or a jitter of
    strength 0 still consumes its draws), so the stream stays aligned with the defaults'."""
    recipe = recipe or SupconRecipe()
    box = sample_resized_crop(n, height, width, generator, scale=recipe.scale)
    flip = torch.rand(n, generator=generator) < 0.5
    if not recipe.flip:
        flip = torch.zeros_like(flip)
    jit = sample_jitter(n, generator, strength=recipe.strength, p=recipe.p_jitter)
    if recipe.jitter == 0:
        # Every factor is the identity: turn the ops off instead of computing them.
        jit["apply"] = torch.zeros_like(jit["apply"])
    gray = torch.rand(n, generator=generator) < recipe.p_gray
    order = jit.pop("order").tolist()
    return {"box": box, "flip": flip, "gray": gray, **jit}, order


def apply_supcon(
    images: torch.Tensor,
    views: int,
    params: dict[str, torch.Tensor],
    order: Sequence[int],
    size: int | None = None,
    jitter: bool = True,
) -> torch.Tensor:
    """Render :func:`sample_supcon`'s parameters (B*V views, image-major) on a uint8 batch
    (B, C, H, W) -> float (B, V, C, S, S) in [0, 1]. Parameters already on the images'
    device are used in place (no copy). ``jitter`` False skips the color jitter (for a
    recipe of strength 0, whose ``apply`` is all false anyway)."""
    B, C, H, _ = images.shape
    S = size or H
    src = images.repeat_interleave(views, dim=0) if views > 1 else images
    x = resized_crop_flip(src.float().div_(255.0), params["box"], params["flip"], S)
    if jitter:
        x = color_jitter(x, params, order)
    if C == 3:
        x = torch.where(params["gray"].to(x.device).view(-1, 1, 1, 1), grayscale(x).expand_as(x), x)
    return x.view(B, views, C, S, S)


def supcon_views(
    images: torch.Tensor,
    views: int,
    generator: torch.Generator,
    size: int | None = None,
    recipe: SupconRecipe | None = None,
) -> torch.Tensor:
    """SupCon augmentation of a uint8 batch (B, C, H, W) -> float (B, V, C, S, S) in [0, 1]:
    per view and image RandomResizedCrop(scale 0.2-1) + flip, ColorJitter(0.4, 0.4, 0.4,
    0.1) with p 0.8, grayscale with p 0.2 (docs/design.md §5; ``recipe`` changes these). All
    V*B views in one batch."""
    B, _, H, W = images.shape
    params, order = sample_supcon(B * views, H, W, generator, recipe)
    return apply_supcon(images, views, params, order, size, (recipe or SupconRecipe()).jitter > 0)


# ------------------------------------------------------------------------------ loader
@dataclass
class EpochTensors:
    """One epoch of a :class:`GpuLoader`, everything per-batch on the loader's device.

    ``batches``: (start, length) of each batch in ``order``; ``order`` (M,) long data set
    indices; ``aug`` (V, N, 3) pad-crop + flip table (``standard`` only); ``cutout`` (V, N, 2)
    cutout centres (``standard`` with cutout only); ``supcon``: per-view
    parameters of the whole epoch, batch after batch (batch b's views at ``start * V``), and
    ``orders`` the jitter op order of each batch as Python ints (``supcon`` only).
    """

    batches: list[tuple[int, int]]
    order: torch.Tensor
    aug: torch.Tensor | None = None
    supcon: dict[str, torch.Tensor] | None = None
    orders: list[list[int]] | None = None
    cutout: torch.Tensor | None = None

    def device_tensors(self) -> list[torch.Tensor]:
        out = [self.order] + ([self.aug] if self.aug is not None else [])
        out += [self.cutout] if self.cutout is not None else []
        return out + list((self.supcon or {}).values())


class GpuLoader:
    """Batches from a uint8 tensor data set held on ``device``.

    Yields the same :class:`Batch` structure as the DataLoader path, from the same
    :class:`EpochPlan` (so pad-crop + flip batches are identical to the DataLoader path's).
    Built by :func:`supkd.data.make_loader`; ``plan_fn(epoch)`` gives the epoch's plan.

    :meth:`prepare` moves an epoch's plan to the device (once per epoch); :meth:`batches`
    then only slices device tensors, so no step waits on a host-to-device copy.

    ``cutout``: side of the square erased per ``standard`` view after normalization (0:
    none; DeVries & Taylor, 2017); the batches then carry no ``aug`` (the crop + flip is not
    the only augmentation, so the teacher cache must not look them up).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        batch_size: int,
        views: int,
        augment: str,
        pad: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        device: torch.device,
        drop_last: bool,
        plan_fn,
        size: int | None = None,
        recipe: SupconRecipe | None = None,
        cutout: int = 0,
        resize_to: int | None = None,
    ) -> None:
        self.images = images.to(device)
        # data.resize: batch: standard and evaluation batches are resized to this side after
        # the crop + flip (SupCon views render at `size` directly).
        self.resize_to = resize_to
        self.labels = labels.to(device).long()
        self.batch_size = batch_size
        self.views = views
        self.augment = augment
        self.pad = pad
        self.mean, self.std = mean, std
        self.device = device
        self.drop_last = drop_last
        self.plan_fn = plan_fn
        self.size = size
        self.recipe = recipe or SupconRecipe()
        self.cutout = cutout if augment == "standard" else 0
        # Normalization constants made once (a torch.tensor(..., device=cuda) per batch is
        # a host-to-device copy per batch).
        self._affine = {
            scale: normalization_affine(mean, std, device, scale) for scale in (255.0, 1.0)
        }

    def num_batches(self, m: int) -> int:
        return num_batches(m, self.batch_size, self.drop_last)

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            # Pinned + non_blocking: the copy is queued behind the running steps instead of
            # waiting for them (pageable memory would stall the host until the queue drains).
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    def prepare(self, plan: EpochPlan) -> EpochTensors:
        """Move what the epoch's batches need to the device: the order, the crop/flip table
        (``standard``) or the SupCon parameters of every batch (``supcon``), drawn from
        ``plan.generator`` batch after batch exactly as a per-batch draw would."""
        m = len(plan.order)
        starts = range(0, self.num_batches(m) * self.batch_size, self.batch_size)
        batches = [(s, min(self.batch_size, m - s)) for s in starts]
        ep = EpochTensors(batches, self._to_device(plan.order))
        if self.augment == "standard":
            ep.aug = self._to_device(plan.aug)
            if self.cutout:
                if plan.cutout is None:
                    raise ValueError("cutout needs a plan with cutout centres (cutout_size > 0)")
                ep.cutout = self._to_device(plan.cutout)
        elif self.augment == "supcon":
            _, _, H, W = self.images.shape
            drawn = [
                sample_supcon(n * self.views, H, W, plan.generator, self.recipe) for _, n in batches
            ]
            ep.orders = [order for _, order in drawn]
            ep.supcon = {
                k: self._to_device(torch.cat([p[k] for p, _ in drawn]))
                if drawn
                else torch.empty(0, device=self.device)
                for k in SUPCON_KEYS
            }
        return ep

    def iterate(self, plan: EpochPlan) -> Iterator[Batch]:
        return self.batches(self.prepare(plan))

    def _normalize(self, x: torch.Tensor, scale: float) -> torch.Tensor:
        shift, mult = self._affine[scale]
        return torch.addcmul(shift, x.float(), mult)

    def batches(self, ep: EpochTensors) -> Iterator[Batch]:
        """The epoch's batches; device work only (no host-device copy, no sync)."""
        V = self.views
        for b, (start, n) in enumerate(ep.batches):
            idx = ep.order.narrow(0, start, n)
            imgs = self.images.index_select(0, idx)
            aug = None
            if self.augment == "standard":
                assert ep.aug is not None
                views = [
                    crop_flip_batch(imgs, ep.aug[v].index_select(0, idx), self.pad)
                    for v in range(V)
                ]
                x = torch.stack(views, 1) if V > 1 else views[0]
                if V == 1 and ep.cutout is None:
                    aug = ep.aug[0].index_select(0, idx)
                if self.resize_to is not None:
                    x = resize_batch(x, self.resize_to)
                x = self._normalize(x, 255.0)
                if ep.cutout is not None:
                    H, W = x.shape[-2:]
                    masks = [
                        cutout_mask_batch(ep.cutout[v].index_select(0, idx), H, W, self.cutout)
                        for v in range(V)
                    ]
                    x = erase(x, torch.stack(masks, 1) if V > 1 else masks[0])
            elif self.augment == "supcon":
                assert ep.supcon is not None and ep.orders is not None
                params = {k: t.narrow(0, start * V, n * V) for k, t in ep.supcon.items()}
                x = apply_supcon(imgs, V, params, ep.orders[b], self.size, self.recipe.jitter > 0)
                x = self._normalize(x, 1.0)
                if V == 1:
                    x = x[:, 0]
            else:
                size = self.resize_to or self.size
                x = imgs if size in (None, imgs.shape[-1]) else resize_batch(imgs, size)
                x = self._normalize(x, 255.0)
                if V > 1:
                    x = x[:, None].expand(-1, V, -1, -1, -1)
            yield Batch(x, self.labels.index_select(0, idx), idx, aug)
