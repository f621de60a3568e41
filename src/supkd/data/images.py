"""What the data-set files share: in-memory images, a split's source, decode and resize.

Small data sets (digits, CIFAR) are decoded once into one uint8 tensor (N, C, H, W)
(:class:`TensorImageDataset`): that tensor is what the GPU-resident loader moves to the
device. A :class:`Source` is one split before subsetting: its labels (for stratified splits)
and a ``take(indices)`` that materializes only the images kept (a subset of the JPEG pack
decodes only the images it needs).

:func:`decode_image_bytes` is the one decoder of image files: torchvision's (fast, native)
for the formats it reads, Pillow (a dependency of torchvision) for the others, always
uint8 RGB (3, H, W); :func:`identity_digest` is the content identity of a data set that
``result.json`` records (:meth:`supkd.data.DataBundle.summary`).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as TF

__all__ = [
    "DEFAULT_ROOT",
    "TEST_FRACTION",
    "TEST_SPLIT_SEED",
    "TORCHVISION_EXTENSIONS",
    "Source",
    "TensorImageDataset",
    "decode_image_bytes",
    "identity_digest",
    "quiet",
    "resize_all",
    "tensor_source",
]

#: Held-out test fraction for data sets without a test split of their own (digits, a plain
#: class-per-folder tree). Drawn with a fixed seed so the test set never depends on a run.
TEST_FRACTION = 0.2
TEST_SPLIT_SEED = 0
DEFAULT_ROOT = Path(os.environ.get("SUPKD_DATA", Path.home() / ".cache" / "supkd" / "data"))


def quiet(fn: Callable, *args, **kwargs):
    # torchvision 0.29 deprecates its image codecs in favour of TorchCodec (a further
    # dependency); they still work and are the fast path here, so the per-call warning
    # is silenced rather than repeated for every image.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision")
        return fn(*args, **kwargs)


#: File types torchvision's ``decode_image`` reads (its build may add AVIF/HEIC; not relied on).
TORCHVISION_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif")
# "decode_image, /__w/vision/.../decode_image.cpp:67, Unsupported image file..." (or
# "operator(), /__w/.../decode_png.cpp:79, ...") -> the last part: the function and build
# path of torchvision's C++ source say nothing to a user.
_SOURCE_PREFIX = re.compile(r"^(?:[^,/]+, )?(?:/\S+\.(?:cpp|cc|cu|h|hpp):\d+, )")
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def decode_reason(exc: BaseException) -> str:
    """A decoder's error as one line, whole, without the library's build paths."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return _SOURCE_PREFIX.sub("", text)


def _to_uint8_rgb(image: torch.Tensor) -> torch.Tensor:
    if image.ndim == 4:  # an animated GIF: (frames, C, H, W); its first frame is the image
        image = image[0]
    if image.dtype != torch.uint8:  # 16-bit PNG: the top 8 bits, as torchvision's to_dtype
        image = TF.to_dtype(image, torch.uint8, scale=True)
    return image


def _pil_decode(data: bytes) -> torch.Tensor:
    """Pillow's decode as uint8 RGB (3, H, W): PPM/PGM/BMP/TIFF and whatever torchvision
    does not read. 16-bit gray images keep their top 8 bits (as for 16-bit PNGs); palette,
    gray, CMYK and alpha images are converted to RGB the way Pillow's ``convert`` does."""
    with PIL.Image.open(io.BytesIO(data)) as im:
        im.seek(0)
        if im.mode in _SIXTEEN_BIT_MODES:
            gray = np.clip(np.asarray(im, dtype=np.int64) >> 8, 0, 255).astype(np.uint8)
            arr = np.repeat(gray[..., None], 3, axis=2)
        elif im.mode == "F":
            raise ValueError("32-bit floating-point pixels (expected 8- or 16-bit images)")
        else:
            arr = np.asarray(im.convert("RGB"))
    return torch.from_numpy(np.array(arr, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def decode_image_bytes(data: bytes | np.ndarray, suffix: str = "") -> torch.Tensor:
    """The uint8 RGB image (3, H, W) in an image file's bytes.

    ``suffix`` (the file's extension, lower case) picks the decoder: torchvision's for
    :data:`TORCHVISION_EXTENSIONS` (a file it calls unsupported, e.g. a BMP named ``.png``,
    goes to Pillow next), Pillow's for the rest. Raises ``ValueError`` with the decoder's
    reason (:func:`decode_reason`) when neither can decode it.
    """
    raw = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
    if suffix in TORCHVISION_EXTENSIONS:
        try:
            tensor = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
            return _to_uint8_rgb(quiet(decode_image, tensor, mode=ImageReadMode.RGB))
        except RuntimeError as exc:
            if "nsupported image" not in str(exc):
                raise ValueError(decode_reason(exc)) from None
    try:
        return _pil_decode(raw)
    except (OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombError) as exc:
        raise ValueError(decode_reason(exc)) from None


def identity_digest(*parts: bytes | str | torch.Tensor | np.ndarray) -> str:
    """SHA-256 (hex) over ``parts``, each length-prefixed so that no two sequences of parts
    give the same stream: tensors by dtype, shape and bytes, strings as UTF-8."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            t = part.detach().cpu().contiguous()
            head = f"{t.dtype}:{tuple(t.shape)}".encode()
            body = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        elif isinstance(part, np.ndarray):
            head, body = f"{part.dtype}:{part.shape}".encode(), np.ascontiguousarray(part).tobytes()
        elif isinstance(part, str):
            head, body = b"", part.encode("utf-8", "surrogateescape")
        else:
            head, body = b"", part
        h.update(len(head).to_bytes(8, "little") + head + len(body).to_bytes(8, "little"))
        h.update(body)
    return h.hexdigest()


class TensorImageDataset(Dataset):
    """In-memory images: ``images`` uint8 (N, C, H, W), ``labels`` long (N,)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str]) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(
                f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        if labels.shape != (images.shape[0],):
            raise ValueError(
                f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}"
            )
        self.images = images
        self.labels = labels.long()
        self.classes = list(classes)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])

    def select(self, indices: torch.Tensor) -> TensorImageDataset:
        return TensorImageDataset(self.images[indices], self.labels[indices], self.classes)

    def identity(self) -> str:
        """Content identity: the pixels and labels (in-memory sets are small: digits, CIFAR)."""
        return identity_digest(self.images, self.labels)


@dataclass
class Source:
    """One split of a data set before subsetting: ``labels`` (N,) long, and ``take(indices)``
    giving the data set of those images. ``classes``: the class names, where the split
    knows them itself (a JPEG pack file)."""

    labels: torch.Tensor
    take: Callable[[torch.Tensor], Dataset]
    classes: list[str] | None = None


def tensor_source(ds: TensorImageDataset) -> Source:
    """The :class:`Source` of an in-memory data set."""
    return Source(ds.labels, ds.select)


def resize_all(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return TF.resize(images, [size, size], antialias=True)
