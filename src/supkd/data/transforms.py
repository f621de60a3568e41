"""Per-sample transforms of the DataLoader path (torchvision.transforms.v2 on uint8 tensors)
and the batch normalization both paths share.

- ``standard`` on small images: pad ``pad`` (zeros) + random crop back to size + horizontal
  flip (He et al., 2016, Sec. 4.2), parameters from the epoch plan so they can be reported
  in ``Batch.aug``;
- ``standard`` on ImageNet-style trees: RandomResizedCrop(size) + horizontal flip;
- ``supcon``: two (or V) views of RandomResizedCrop(scale 0.2-1) + flip +
  ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8 + grayscale with p 0.2 (Khosla et al., 2020,
  public code; DESIGN.md §5);
- ``none`` / evaluation: nothing for small images; resize to size/0.875 + center crop for
  ImageNet-style trees (the 256 -> 224 protocol).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

# SupCon augmentation constants (DESIGN.md §5).
SUPCON_SCALE = (0.2, 1.0)
SUPCON_RATIO = (3 / 4, 4 / 3)
SUPCON_JITTER = (0.4, 0.4, 0.4, 0.1)  # brightness, contrast, saturation, hue
SUPCON_P_JITTER = 0.8
SUPCON_P_GRAY = 0.2
AUGMENTS = ("standard", "supcon", "none")


def crop_flip(image: torch.Tensor, dy: int, dx: int, flip: int, pad: int) -> torch.Tensor:
    """uint8 (C, H, W) -> (C, H, W): zero-pad by ``pad``, crop at (dy, dx), maybe flip."""
    h, w = image.shape[-2:]
    out = TF.crop(TF.pad(image, [pad]), dy, dx, h, w)
    return TF.horizontal_flip(out) if flip else out


def supcon_transform(size: int, in_channels: int = 3) -> Callable[[torch.Tensor], torch.Tensor]:
    """One SupCon view, uint8 (C, H, W) -> uint8 (C, size, size). On one channel only
    brightness and contrast apply (saturation, hue and grayscale need color)."""
    b, c, s, h = SUPCON_JITTER
    jitter = v2.ColorJitter(b, c, s, h) if in_channels == 3 else v2.ColorJitter(b, c)
    ops: list[Callable] = [
        v2.RandomResizedCrop(size, scale=SUPCON_SCALE, ratio=SUPCON_RATIO, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([jitter], p=SUPCON_P_JITTER),
    ]
    if in_channels == 3:
        ops.append(v2.RandomGrayscale(p=SUPCON_P_GRAY))
    return v2.Compose(ops)


def imagenet_train_transform(size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """RandomResizedCrop(size) (scale 0.08-1) + flip: torchvision's ImageNet recipe."""
    return v2.Compose([v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()])


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


def seeded(
    transform: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, seed: int
) -> torch.Tensor:
    """Apply a v2 transform (which draws from torch's global generator) with its randomness
    fixed by ``seed``, leaving the caller's global generator state untouched: per-sample
    seeds make the views a function of (seed, epoch, index), independent of workers."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transform(image)


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
