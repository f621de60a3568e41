"""Per-sample transforms of the DataLoader path (torchvision.transforms.v2 functional ops on
uint8 tensors) and the batch normalization both paths share.

The random transforms take a ``torch.Generator`` (seeded per sample from the epoch plan)
instead of drawing from torch's global generator like v2's transform classes: reseeding the
global generator per sample (``torch.manual_seed``, which also seeds every accelerator) cost
more than the transforms themselves.

- ``standard`` on small images: pad ``pad`` (zeros) + random crop back to size + horizontal
  flip (He et al., 2016, Sec. 4.2), parameters from the epoch plan so they can be reported
  in ``Batch.aug``;
- ``standard`` on ImageNet-style trees: RandomResizedCrop(size) + horizontal flip;
- either ``standard``, with ``data.cutout`` L > 0: then one L x L square erased per view
  (DeVries & Taylor, 2017), centres from the epoch plan; the worker makes the mask
  (:func:`cutout_mask`) and the batch is erased after normalization (:func:`erase`);
- ``supcon``: two (or V) views of RandomResizedCrop(scale 0.2-1) + flip +
  ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8 + grayscale with p 0.2 (Khosla et al., 2020,
  public code; docs/design.md §5), softened per data set by :class:`SupconRecipe` (``data:``
  options ``supcon_scale``, ``supcon_flip``, ``supcon_jitter``, ``supcon_grayscale``);
- ``none`` / evaluation: nothing for small images; resize to size/0.875 + center crop for
  ImageNet-style trees (the 256 -> 224 protocol).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from supkd.config import DataConfig

# SupCon augmentation constants (docs/design.md §5).
SUPCON_SCALE = (0.2, 1.0)
SUPCON_RATIO = (3 / 4, 4 / 3)
SUPCON_JITTER = (0.4, 0.4, 0.4, 0.1)  # brightness, contrast, saturation, hue
SUPCON_P_JITTER = 0.8
SUPCON_P_GRAY = 0.2
AUGMENTS = ("standard", "supcon", "none")
_ATTEMPTS = 10  # RandomResizedCrop tries, as torchvision
#: Uniforms one view of each random transform draws (fixed, whatever the outcome).
RESIZED_CROP_DRAWS = 2 * _ATTEMPTS + 2
CROP_FLIP_DRAWS = RESIZED_CROP_DRAWS + 1
SUPCON_DRAWS = CROP_FLIP_DRAWS + 10


@dataclass(frozen=True)
class SupconRecipe:
    """How strong the SupCon views are; the defaults are Khosla et al.'s CIFAR recipe.

    - ``scale``: RandomResizedCrop area fractions ``(lo, hi)``;
    - ``flip``: horizontal flip with p 1/2;
    - ``jitter``: ColorJitter strength s: brightness, contrast, saturation ~ U[1 - s, 1 + s],
      hue ~ U[-s/4, s/4] (s = 0.4 gives the recipe's (0.4, 0.4, 0.4, 0.1): one number keeps
      the recipe's proportions), applied with probability ``p_jitter``;
    - ``p_gray``: probability of a grayscale view (three channels only).

    Options change what a draw does, never how many numbers are drawn, so both loader paths
    stay in step and the defaults reproduce the fixed recipe bit for bit.
    """

    scale: tuple[float, float] = SUPCON_SCALE
    flip: bool = True
    jitter: float = SUPCON_JITTER[0]
    p_jitter: float = SUPCON_P_JITTER
    p_gray: float = SUPCON_P_GRAY

    @property
    def strength(self) -> tuple[float, float, float, float]:
        """(brightness, contrast, saturation, hue) of ColorJitter."""
        s = float(self.jitter)
        return (s, s, s, s / 4)  # s / 4 is exact in binary: 0.4 -> 0.1 bit for bit

    @classmethod
    def from_config(cls, cfg: DataConfig) -> SupconRecipe:
        """The recipe of a ``data:`` section (its ``supcon_*`` fields)."""
        lo, hi = cfg.supcon_scale
        return cls(
            scale=(float(lo), float(hi)),
            flip=bool(cfg.supcon_flip),
            jitter=float(cfg.supcon_jitter),
            p_gray=float(cfg.supcon_grayscale),
        )


def crop_flip(image: torch.Tensor, dy: int, dx: int, flip: int, pad: int) -> torch.Tensor:
    """uint8 (C, H, W) -> (C, H, W): zero-pad by ``pad``, crop at (dy, dx), maybe flip."""
    h, w = image.shape[-2:]
    out = TF.crop(TF.pad(image, [pad]), dy, dx, h, w)
    return TF.horizontal_flip(out) if flip else out


def resized_crop_box(
    u: Sequence[float],
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float] = SUPCON_RATIO,
) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of a RandomResizedCrop from :data:`RESIZED_CROP_DRAWS` uniforms
    in [0, 1): ``u[2k]`` the area fraction and ``u[2k+1]`` the log aspect ratio of try k
    (10 tries), ``u[20], u[21]`` the corner. Same distribution as torchvision's
    ``RandomResizedCrop.get_params`` (area ~ U(scale), log ratio ~ U(log ratio), the first
    try that fits, corner uniform over the valid positions; else the centered largest box of
    aspect within ``ratio``). Written out in Python floats because get_params draws from
    torch's global generator, which would need a global reseed per sample."""
    area = height * width
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    for k in range(_ATTEMPTS):
        target = area * (scale[0] + (scale[1] - scale[0]) * u[2 * k])
        aspect = math.exp(lo + (hi - lo) * u[2 * k + 1])
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(u[2 * _ATTEMPTS] * (height - h + 1))
            left = int(u[2 * _ATTEMPTS + 1] * (width - w + 1))
            return top, left, h, w
    return center_fallback_box(height, width, ratio)


def center_fallback_box(
    height: int, width: int, ratio: Sequence[float]
) -> tuple[int, int, int, int]:
    """torchvision RandomResizedCrop's fallback when no try fits: the central crop of the
    whole image clamped to the aspect-ratio range. Returns ``(top, left, h, w)``."""
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class RandomResizedCropFlip:
    """One view: RandomResizedCrop(size, ``scale``) + horizontal flip with p 1/2 (never
    when ``flip`` is False), uint8 (C, H, W) -> (C, size, size), randomness from
    ``generator`` only (``scale`` (0.08, 1): torchvision's ImageNet recipe). Draws exactly
    :data:`CROP_FLIP_DRAWS` uniforms, flip or not."""

    def __init__(
        self, size: int, scale: tuple[float, float] = (0.08, 1.0), flip: bool = True
    ) -> None:
        self.size, self.scale, self.flip = size, scale, flip

    def view(self, image: torch.Tensor, u: Sequence[float]) -> torch.Tensor:
        top, left, h, w = resized_crop_box(u, image.shape[-2], image.shape[-1], self.scale)
        x = TF.resized_crop(image, top, left, h, w, [self.size, self.size], antialias=True)
        return TF.horizontal_flip(x) if self.flip and u[RESIZED_CROP_DRAWS] < 0.5 else x

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.view(image, torch.rand(CROP_FLIP_DRAWS, generator=generator).tolist())


class SupconAugment(RandomResizedCropFlip):
    """One SupCon view, uint8 (C, H, W) -> uint8 (C, size, size), randomness from
    ``generator`` only: RandomResizedCrop(scale 0.2-1) + flip, ColorJitter(0.4, 0.4, 0.4,
    0.1) in a random order with p 0.8, grayscale with p 0.2 (Khosla et al., 2020, public
    code; docs/design.md §5; ``recipe`` changes these), drawn as torchvision.transforms.v2 draws
    them and applied with its functional ops. On one channel only brightness and contrast
    apply (saturation, hue and grayscale need color). Draws exactly :data:`SUPCON_DRAWS`
    uniforms per view, whatever is applied, so the stream of later views does not depend on
    earlier ones' outcomes."""

    def __init__(self, size: int, in_channels: int = 3, recipe: SupconRecipe | None = None) -> None:
        recipe = recipe or SupconRecipe()
        super().__init__(size, recipe.scale, recipe.flip)
        self.in_channels, self.recipe = in_channels, recipe

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        u = torch.rand(SUPCON_DRAWS, generator=generator).tolist()
        x = self.view(image, u)
        j = u[CROP_FLIP_DRAWS:]  # apply, 4 factors, 4 order keys, gray
        strength = self.recipe.strength
        # Strength 0 makes every op the identity: skipped (the draws are still consumed).
        if j[0] < self.recipe.p_jitter and self.recipe.jitter > 0:
            ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
            # Factors ~ U[1 - s, 1 + s] (hue: U[-h, h]) and a uniformly random op order
            # (argsort of 4 uniforms), as v2.ColorJitter's randperm(4).
            for k in sorted(range(4), key=lambda k: j[5 + k]):
                if k >= 2 and self.in_channels != 3:
                    continue
                s = strength[k]
                f = (2 * j[1 + k] - 1) * s if k == 3 else 1 - s + 2 * s * j[1 + k]
                x = ops[k](x, f)
        if self.in_channels == 3 and j[9] < self.recipe.p_gray:
            x = TF.rgb_to_grayscale(x, num_output_channels=3)
        return x


def cutout_mask(height: int, width: int, cy: int, cx: int, length: int) -> torch.Tensor:
    """bool (H, W), True on the cutout square of one view (DeVries & Taylor, 2017, "Improved
    Regularization of Convolutional Neural Networks with Cutout", arXiv:1708.04552): rows
    ``cy - length // 2`` to ``cy - length // 2 + length - 1`` and columns alike, clipped to
    the image, so a square of side ``length`` centred at ``(cy, cx)`` (for odd ``length``
    the paper's code, ``cy ± length // 2``, spans ``length - 1``; here it spans ``length``).
    Written as the paper's code writes it (clip the corners, assign a slice) so that the
    batched :func:`supkd.data.gpu.cutout_mask_batch` has an independent reference."""
    y1 = min(max(cy - length // 2, 0), height)
    x1 = min(max(cx - length // 2, 0), width)
    y2 = min(max(cy - length // 2 + length, 0), height)
    x2 = min(max(cx - length // 2 + length, 0), width)
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[y1:y2, x1:x2] = True
    return mask


def erase(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cutout on normalized images: x float (..., C, H, W), mask bool (..., H, W) -> x with
    0.0 where ``mask`` is true, in every channel. 0 after normalization is the data set's
    mean colour, what the paper's code gets by erasing after Normalize; a fill (not a
    multiply by 0) gives +0.0 everywhere, so both loader paths agree bit for bit."""
    return x.masked_fill(mask.unsqueeze(-3), 0.0)


def eval_transform(style: str, size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Deterministic evaluation transform: identity for small fixed-size images (resized if
    they are not ``size``), resize(size / 0.875) + center crop for ImageNet-style trees."""
    if style == "imagenet":
        return v2.Compose([v2.Resize(round(size / 0.875), antialias=True), v2.CenterCrop(size)])

    def fit(image: torch.Tensor) -> torch.Tensor:
        if image.shape[-2:] == (size, size):
            return image
        return TF.resize(image, [size, size], antialias=True)

    return fit


def resize_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    """Images (..., C, H, W) (uint8 or float, any leading dims) -> float (..., C, S, S) with
    S = ``size``, values in the input's range: bilinear, ``align_corners=False``,
    antialiased (it matters when shrinking only). The one resize of ``data.resize: batch``,
    used by both loader paths and the teacher cache, so all three see the same pixels;
    ``x`` unchanged (as float) when it already has the size."""
    *lead, c, h, w = x.shape
    x = x.float()
    if (h, w) == (size, size):
        return x
    y = F.interpolate(
        x.reshape(-1, c, h, w), size=(size, size), mode="bilinear", align_corners=False,
        antialias=True,
    )
    return y.reshape(*lead, c, size, size)


def normalize_batch(
    x: torch.Tensor, mean: Sequence[float], std: Sequence[float], scale: float = 255.0
) -> torch.Tensor:
    """(..., C, H, W) uint8 (or float in [0, scale/255]) -> float32 ``(x / scale - mean) / std``
    per channel, computed on x's device as one multiply-add."""
    c = x.shape[-3]
    if len(mean) != c or len(std) != c:
        raise ValueError(f"normalization has {len(mean)} channels, images have {c}")
    shift, mult = normalization_affine(mean, std, x.device, scale)
    return torch.addcmul(shift, x.float(), mult)


def normalization_affine(
    mean: Sequence[float], std: Sequence[float], device: torch.device | str, scale: float = 255.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(shift, mult)``, each float32 (C, 1, 1) on ``device``, with ``(x / scale - mean) / std
    = shift + x * mult``: ``shift = -mean / std``, ``mult = 1 / (std * scale)``. Made once by
    loaders that normalize every batch (building them is a host-to-device copy)."""
    shape = (len(mean), 1, 1)
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(shape)
    s = torch.tensor(std, dtype=torch.float32, device=device).view(shape)
    return -m / s, 1.0 / (s * scale)
