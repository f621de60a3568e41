"""``imagefolder``: any class-per-folder image tree (ImageNet layout or a single tree),
decoded file by file when read (DataLoader workers).

The tree is read once, when the data set is built, and every way it can mislead is a
one-line :class:`~supkd.errors.DataError` naming the file or folder, never a silently
different data set:

- the layout: ``ROOT/train`` + ``ROOT/val`` (or ``test``), or class folders directly in
  ``ROOT``; a root holding ``train/`` alone (or ``val/`` alone) is refused rather than read
  as one class named ``train``;
- symlinks are followed (data sets are often linked in), but each real folder is read once:
  a link back to a folder above it (a loop) and a second way into a folder or file already
  read (its images would count twice, or leak from the training into the test split) are
  refused, and so is a broken link;
- empty files are found by the scan (one ``stat`` each, cheap even for ImageNet); a file
  that does not decode is named with the decoder's whole reason the first time it is read.

Formats: JPEG, PNG, WebP and GIF go through torchvision's decoder, PPM/PGM/PBM, BMP and
TIFF through Pillow (:func:`supkd.data.images.decode_image_bytes`); every image comes out
uint8 RGB, so 16-bit, gray and palette files can be mixed with 8-bit RGB ones.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from supkd.config import DataConfig
from supkd.data.images import (
    TEST_FRACTION,
    TEST_SPLIT_SEED,
    Source,
    decode_image_bytes,
    identity_digest,
)
from supkd.data.spec import LoadedSplits, register_dataset
from supkd.data.splits import stratified_split
from supkd.errors import DataError

__all__ = ["IMG_EXTENSIONS", "NATIVE_SIZE", "ImageFolderDataset", "load_imagefolder",
           "scan_image_folder"]

NATIVE_SIZE = 224
#: The file types read (lower case): torchvision's ``IMG_EXTENSIONS`` that some decoder here
#: reads, plus GIF and PBM.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".ppm", ".pgm", ".pbm", ".bmp",
                  ".tif", ".tiff")
#: Folder names of the ImageNet layout (``ROOT/train`` + ``ROOT/val`` or ``ROOT/test``).
SPLIT_FOLDERS = ("train", "val", "test")


class ImageFolderDataset(Dataset):
    """Files of a class-per-folder tree, decoded to uint8 RGB (3, H, W) when read.

    A file that does not decode raises DataError naming it the first time it is read.
    Skipping would silently change the data set between runs and make results
    incomparable; a user should remove or replace the file instead.
    """

    def __init__(self, paths: Sequence[str], labels: torch.Tensor, classes: Sequence[str],
                 sizes: Sequence[int] | None = None, root: str | None = None) -> None:
        self.paths = list(paths)
        self.labels = labels.long()
        self.classes = list(classes)
        self.sizes = list(sizes) if sizes is not None else [-1] * len(self.paths)
        self.root = root

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path = self.paths[i]
        try:
            data = np.fromfile(path, dtype=np.uint8)
            image = decode_image_bytes(data, os.path.splitext(path)[1].lower())
        except (OSError, ValueError) as e:
            reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
            raise DataError(f"cannot decode image file {path}: {reason}") from None
        return image, int(self.labels[i])

    def select(self, indices: torch.Tensor) -> ImageFolderDataset:
        keep = indices.tolist()
        return ImageFolderDataset([self.paths[i] for i in keep], self.labels[indices],
                                  self.classes, [self.sizes[i] for i in keep], self.root)

    def identity(self) -> str:
        """Content identity without reading a pixel: every file's path below the tree's root,
        byte size and label, in order (a renamed, replaced or relabelled file changes it)."""
        root = self.root or ""
        names = "\n".join(f"{os.path.relpath(p, root) if root else p}\t{s}"
                          for p, s in zip(self.paths, self.sizes))
        return identity_digest(names, self.labels)


@dataclass
class _Scan:
    """What one read of a tree found; ``seen`` (real folder -> the path it was reached by)
    is shared by the trees of one data set, so that no folder is read twice."""

    seen: dict[str, str] = field(default_factory=dict)
    roots: set[str] = field(default_factory=set)  # the trees' own folders (no images read)
    links: list[tuple[str, str]] = field(default_factory=list)  # (file symlink, its target)


def _walk(path: str, ancestors: tuple[str, ...], scan: _Scan, out: list[tuple[str, int]]) -> None:
    """Append (file, size) of every image under ``path`` (sorted; hidden names skipped)."""
    real = os.path.realpath(path)
    if real in ancestors:
        raise DataError(f"image folder {path}: is a symlink back to {real}, a folder above "
                        "it (a loop); remove the link")
    if real in scan.seen:
        raise DataError(f"image folder {path}: is the same folder as {scan.seen[real]} (through "
                        "a symlink); its images would be counted twice")
    scan.seen[real] = path
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError as exc:
        raise DataError(f"image folder {path}: cannot be read ({exc.strerror})") from None
    for e in entries:
        if e.name.startswith("."):
            continue
        if e.is_symlink() and not os.path.exists(e.path):
            raise DataError(f"image file {e.path}: is a broken symlink (to "
                            f"{os.readlink(e.path)}); remove or fix it")
        if e.is_dir():
            _walk(e.path, (*ancestors, real), scan, out)
        elif e.name.lower().endswith(IMG_EXTENSIONS):
            size = e.stat().st_size
            if size == 0:
                raise DataError(f"image file {e.path} is empty (0 bytes); remove or replace it")
            if e.is_symlink():
                scan.links.append((e.path, os.path.realpath(e.path)))
            out.append((e.path, size))


def _check_links(scan: _Scan) -> None:
    """A file symlink whose target is read anyway (it lies in a folder of the tree, or
    another link points to it) would count that image twice."""
    targets: dict[str, str] = {}
    for link, target in scan.links:
        folder = os.path.dirname(target)
        if folder in scan.seen and folder not in scan.roots:
            raise DataError(f"image file {link}: is a symlink to {target}, which is read "
                            "too; the image would be counted twice")
        if target in targets:
            raise DataError(f"image file {link}: is the same file as {targets[target]} (both "
                            f"link to {target}); the image would be counted twice")
        targets[target] = link


def _scan_tree(root: Path, scan: _Scan) -> tuple[list[str], list[str], list[int], list[int]]:
    """(classes, paths, labels, sizes) of the class-per-folder tree ``root``."""
    if not root.is_dir():
        raise DataError(f"image folder {root} not found")
    found: list[tuple[str, int]] = []
    root_real = os.path.realpath(root)
    if root_real in scan.seen:
        raise DataError(f"image folder {root}: is the same folder as {scan.seen[root_real]} "
                        "(through a symlink); its images would be in two splits")
    scan.seen[root_real] = str(root)
    scan.roots.add(root_real)
    entries = [e for e in os.scandir(root) if not e.name.startswith(".")]
    broken = next((e for e in entries if e.is_symlink() and not os.path.exists(e.path)), None)
    if broken is not None:
        raise DataError(f"image folder {broken.path}: is a broken symlink (to "
                        f"{os.readlink(broken.path)}); remove or fix it")
    classes = sorted(e.name for e in entries if e.is_dir())
    if not classes:
        raise DataError(
            f"image folder {root} has no class sub-folders (expected ROOT/<class>/<image>)"
        )
    paths: list[str] = []
    labels: list[int] = []
    sizes: list[int] = []
    for k, c in enumerate(classes):
        found.clear()
        _walk(str(root / c), (root_real,), scan, found)
        if not found:
            raise DataError(
                f"class folder {root / c} holds no images (expected files ending in "
                f"{', '.join(IMG_EXTENSIONS)})"
            )
        paths += [p for p, _ in found]
        sizes += [s for _, s in found]
        labels += [k] * len(found)
    return classes, paths, labels, sizes


def scan_image_folder(root: Path) -> tuple[list[str], list[str], list[int]]:
    """(classes, file paths, labels) of a class-per-folder tree; DataError on a missing
    folder, no class folders, an empty class folder, a zero-byte file, a broken symlink or
    a folder or file reached twice (module docstring)."""
    scan = _Scan()
    classes, paths, labels, _ = _scan_tree(Path(root), scan)
    _check_links(scan)
    return classes, paths, labels


def _tree_dataset(root: Path, scan: _Scan) -> ImageFolderDataset:
    classes, paths, labels, sizes = _scan_tree(root, scan)
    return ImageFolderDataset(paths, torch.tensor(labels), classes, sizes, str(root))


def _layout(root: Path) -> Path | None:
    """The held-out folder of an ImageNet layout (``val`` or ``test``), or None for a single
    tree; DataError for a root that has some split folders but not both halves."""
    present = [s for s in SPLIT_FOLDERS if (root / s).is_dir()]
    held_out = next((root / s for s in ("val", "test") if s in present), None)
    if "train" in present and held_out is None:
        raise DataError(
            f"image folder {root}: holds train/ but no val/ or test/ (expected ROOT/train + "
            f"ROOT/val, or class folders directly in ROOT); set data.root={root / 'train'} "
            "to hold out 20% of it for testing"
        )
    if held_out is not None and "train" not in present:
        raise DataError(
            f"image folder {root}: holds {held_out.name}/ but no train/ (expected ROOT/train "
            "+ ROOT/val, or class folders directly in ROOT)"
        )
    return held_out


# ImageNet statistics (torchvision's pretrained models expect these) and ImageNet-style
# augmentation (RandomResizedCrop; resize + center crop at evaluation).
@register_dataset("imagefolder", native_size=NATIVE_SIZE, channels=3, style="imagenet",
                  normalization=((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
def load_imagefolder(cfg: DataConfig) -> LoadedSplits:
    """``ROOT/train/<class>/*`` + ``ROOT/val/<class>/*`` (ImageNet layout; ``test/`` also
    accepted), or a single ``ROOT/<class>/*`` tree from which a stratified 20% test split
    is held out with a fixed seed."""
    if not cfg.root:
        raise DataError("config field 'data.root': imagefolder needs the folder of the image tree")
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder {root} not found")
    held_out = _layout(root)
    scan = _Scan()
    if held_out is not None:
        train = _tree_dataset(root / "train", scan)
        test = _tree_dataset(held_out, scan)
        if test.classes != train.classes:
            raise DataError(
                f"image folder {held_out}: its classes differ from {root / 'train'} "
                f"({len(test.classes)} vs {len(train.classes)} class folders)"
            )
    else:
        full = _tree_dataset(root, scan)
        test_idx, train_idx = stratified_split(
            full.labels, round(TEST_FRACTION * len(full)), TEST_SPLIT_SEED
        )
        train, test = full.select(train_idx), full.select(test_idx)
    _check_links(scan)
    return LoadedSplits(
        Source(train.labels, train.select),
        Source(test.labels, test.select),
        train.classes,
        cfg.image_size or NATIVE_SIZE,
    )
