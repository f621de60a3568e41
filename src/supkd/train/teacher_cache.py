"""Exact teacher cache: a frozen teacher's logits for every pad-crop + flip view of every image.

With the standard CIFAR augmentation (zero-pad by ``pad`` pixels, crop back to H×W at offset
``(dy, dx)``, then an optional horizontal flip) an image has only ``(2·pad + 1)² · 2`` possible
training views: 9 · 9 · 2 = 162 for ``pad = 4``. A frozen teacher in eval mode maps each view to
fixed logits, so they can be computed once and looked up during distillation; the KD step then
costs only the student's step (issue #7; docs/design.md §7). Stored in bfloat16 the table is
``N × 162 × C × 2`` bytes: 162 MB for CIFAR-10's 50,000 training images.

The view an entry stands for is fixed by :func:`render_views`, which must produce exactly the
pixels the training loader produces for the same ``Batch.aug = [dy, dx, flip]`` (tested in
``tests/train/test_teacher_cache.py`` against ``supkd.data.make_loader``):

- ``dy, dx`` in ``[0, 2·pad]``: top-left corner of the crop in the zero-padded image,
  so ``dy = dx = pad`` is the un-shifted image;
- ``flip`` in ``{0, 1}``: mirror along the width axis, applied after the crop.

With ``data.resize: batch`` (e.g. a 224-pixel ViT teacher on 32-pixel CIFAR) the views are
still the pad-crop + flip views of the images as held, each then resized to the network's
``image_size`` by the loaders' own :func:`supkd.data.transforms.resize_batch`; the table renders
its views the same way, so it stays exact over the same 162 views. With ``data.resize: load``
the crop happens at ``image_size`` (pad ``image_size // 8``: 6,498 views per image at 224
pixels): ``auto`` then runs the teacher live and says why (:data:`AUTO_MAX_VIEWS`).

The table is stored beside the teacher's run as
``TEACHER_DIR/teacher_cache/<key>.pt``, where ``key`` hashes the training images, the teacher's
weights and architecture, the normalization and the padding: a grid of KD runs from one
teacher builds it once; any change to data, teacher or normalization gives a new file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from supkd.data.gpu import crop_flip_batch
from supkd.data.transforms import normalize_batch, resize_batch
from supkd.errors import ConfigError, SupkdWarning
from supkd.models.files import read_torch_file
from supkd.utils.atomic import atomic_torch_save
from supkd.utils.paths import writable_problem

log = logging.getLogger(__name__)

#: Bump when the meaning of a stored table changes (view order, padding rule, dtype).
CACHE_FORMAT = 1
#: Augmentation names (``task.augment``) whose only randomness is pad-crop + flip.
CROP_FLIP_AUGMENTS = ("standard",)
MODES = ("auto", "on", "off")
#: ``auto`` builds a table only up to this many views per image: CIFAR's 162 (pad 4) costs
#: about 162 teacher epochs, which a KD schedule of 240 epochs repays; more views than that
#: (a crop of an upsampled copy) cost more teacher forwards than the run would make live.
AUTO_MAX_VIEWS = 162


def num_views(pad: int) -> int:
    """Number of distinct pad-crop + flip views of one image: ``(2·pad + 1)² · 2``."""
    return (2 * pad + 1) ** 2 * 2


def view_ids(aug: Tensor, pad: int) -> Tensor:
    """Flat view id ``(dy · S + dx) · 2 + flip`` with ``S = 2·pad + 1``; ``aug`` (B, 3) -> (B,)."""
    side = 2 * pad + 1
    return (aug[:, 0] * side + aug[:, 1]) * 2 + aug[:, 2]


def render_views(images: Tensor, aug: Tensor, pad: int) -> Tensor:
    """Pad-crop + flip views of a batch, exactly as the training loader draws them.

    Args:
        images: (B, C, H, W) images (any dtype; uint8 in the loader).
        aug: (B, 3) long ``[dy, dx, flip]`` with ``0 <= dy, dx <= 2·pad`` and flip in {0, 1}.
        pad: zero-padding on each side (4 for CIFAR).

    Returns:
        (B, C, H, W): ``flip(zero_pad(images)[:, :, dy:dy+H, dx:dx+W])`` per sample
        (torchvision ``RandomCrop(H, padding=pad)`` then ``RandomHorizontalFlip``).
    """
    if images.ndim != 4 or aug.ndim != 2 or aug.shape != (images.shape[0], 3):
        raise ValueError(
            f"render_views: expected images (B, C, H, W) and aug (B, 3), got "
            f"{tuple(images.shape)} and {tuple(aug.shape)}"
        )
    # The loader's own op, so cached views are the loader's views by construction.
    return crop_flip_batch(images, aug, pad)


def keys_valid(index: Tensor, aug: Tensor, num_images: int, pad: int) -> Tensor:
    """0-dim bool tensor on the keys' device: every ``index`` (B,) in ``[0, num_images)``,
    every ``aug`` (B, 3) offset ``dy, dx`` in ``[0, 2·pad]`` and flip in ``{0, 1}``.

    Computed without reading anything back to the host, so it can be asserted device-side.
    """
    shifts, flip = aug[:, :2], aug[:, 2]
    return (
        (index >= 0).all()
        & (index < num_images).all()
        & (shifts >= 0).all()
        & (shifts <= 2 * pad).all()
        & ((flip == 0) | (flip == 1)).all()
    )


def check_keys(index: Tensor, aug: Tensor, num_images: int, pad: int) -> None:
    """Raise ``ValueError`` unless ``index`` (B,) and ``aug`` (B, 3) are valid cache keys.

    Shapes and dtypes are checked on the host (metadata only). Values: on CPU they are read
    and a ``ValueError`` names the bad range; on any other device they are asserted
    device-side (``torch._assert_async``), so the step does not wait for the device; a bad
    key then fails at a later synchronization (on CUDA as a device-side assert, which ends
    the process's CUDA context: a debugging aid, not an error to recover from).
    """
    if index.ndim != 1 or aug.ndim != 2 or aug.shape != (index.shape[0], 3):
        raise ValueError(
            f"teacher cache: expected index (B,) and aug (B, 3), got "
            f"{tuple(index.shape)} and {tuple(aug.shape)}"
        )
    if index.dtype.is_floating_point or aug.dtype.is_floating_point:
        raise ValueError("teacher cache: index and aug must be integer tensors")
    if index.numel() == 0:
        return
    if index.device.type != "cpu" or aug.device.type != "cpu":
        # int()/.item() here would synchronize with the device on every lookup.
        device = aug.device if index.device.type == "cpu" else index.device
        index, aug = index.to(device, non_blocking=True), aug.to(device, non_blocking=True)
        torch._assert_async(
            keys_valid(index, aug, num_images, pad),
            f"teacher cache: a key is out of range (image index in [0, {num_images}), "
            f"crop offsets in [0, {2 * pad}], flip in {{0, 1}})",
        )
        return
    if int(index.min()) < 0 or int(index.max()) >= num_images:
        raise ValueError(
            f"teacher cache: image index out of range [0, {num_images}): "
            f"min {int(index.min())}, max {int(index.max())}"
        )
    shifts = aug[:, :2]
    if int(shifts.min()) < 0 or int(shifts.max()) > 2 * pad:
        raise ValueError(
            f"teacher cache: crop offsets dy, dx must lie in [0, {2 * pad}], "
            f"got min {int(shifts.min())}, max {int(shifts.max())}"
        )
    if int(aug[:, 2].min()) < 0 or int(aug[:, 2].max()) > 1:
        raise ValueError("teacher cache: flip must be 0 or 1")


class TeacherCache:
    """Teacher logits for every (image, view): a (N, V, C) bfloat16 table, V = num_views(pad).

    ``lookup(index, aug)`` returns float32 logits (B, C) of exactly the views the loader drew.
    """

    def __init__(
        self,
        logits: Tensor,
        *,
        pad: int,
        key: str,
        path: Path | None = None,
        built: bool = False,
        build_seconds: float = 0.0,
    ) -> None:
        if logits.ndim != 3 or logits.shape[1] != num_views(pad):
            raise ValueError(
                f"TeacherCache: expected logits (N, {num_views(pad)}, C), got {tuple(logits.shape)}"
            )
        self.logits = logits
        self.pad = pad
        self.key = key
        self.path = path
        self.built = built  # True when this object was computed now, False when read from disk
        self.build_seconds = build_seconds

    @property
    def num_images(self) -> int:
        return int(self.logits.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.logits.shape[2])

    @property
    def device(self) -> torch.device:
        return self.logits.device

    def to(self, device: torch.device | str) -> TeacherCache:
        self.logits = self.logits.to(device)
        return self

    def lookup(self, index: Tensor, aug: Tensor, *, check: bool | None = None) -> Tensor:
        """Cached teacher logits of the views ``aug`` (B, 3) of images ``index`` (B,) -> (B, C).

        ``check`` validates the keys (:func:`check_keys`). None (default): True when the
        table is on the CPU, False elsewhere. On CPU the check reads the keys and raises
        ``ValueError``; off the CPU (``check=True``) it is a device-side assert with no host
        synchronization, but it still costs a few small kernels per step, so it is off by
        default there: the loader is the only producer of keys, and out-of-range image
        indices still trip the indexing kernel's bounds check.
        """
        if check is None:
            check = self.logits.device.type == "cpu"
        index = index.to(self.logits.device, non_blocking=True)
        aug = aug.to(self.logits.device, non_blocking=True)
        if check:
            # on the table's device: a host check on CPU, a device-side assert elsewhere
            check_keys(index, aug, self.num_images, self.pad)
        return self.logits[index, view_ids(aug, self.pad)].float()


# ---------------------------------------------------------------------------------------------
# building


def dataset_images(dataset: torch.utils.data.Dataset, batch_size: int = 4096) -> Tensor:
    """All images of a data set of ``(uint8 image (C, H, W), label)`` items -> (N, C, H, W)."""
    for attr in ("images", "data"):
        value = getattr(dataset, attr, None)
        if (
            isinstance(value, Tensor)
            and value.ndim == 4
            and value.dtype == torch.uint8
            and len(value) == len(dataset)  # type: ignore[arg-type]
        ):
            return value
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    parts = [x for x, _ in loader]
    if not parts:
        raise ValueError("teacher cache: the training data set is empty")
    return torch.cat(parts)


def _hash_tensor(h: hashlib._Hash, t: Tensor) -> None:
    t = t.detach().cpu().contiguous().reshape(-1)
    h.update(f"{t.dtype}:{t.numel()}:".encode())
    h.update(t.view(torch.uint8).numpy().tobytes())


def cache_key(
    images: Tensor,
    teacher: nn.Module,
    mean: Sequence[float],
    std: Sequence[float],
    pad: int,
    size: int | None = None,
) -> str:
    """SHA-256 of everything that determines the table: data, teacher, normalization, padding
    and the side views are resized to (``size``; None: not resized)."""
    h = hashlib.sha256()
    h.update(f"supkd-teacher-cache:{CACHE_FORMAT}:pad={pad}".encode())
    if size is not None:  # absent for unresized views: their keys stay what they were
        h.update(f":size={int(size)}".encode())
    h.update(f":mean={[float(m) for m in mean]}:std={[float(s) for s in std]}".encode())
    h.update(f":images={tuple(images.shape)}".encode())
    _hash_tensor(h, images)
    h.update(f":teacher={type(teacher).__name__}:{getattr(teacher, 'spec', None)!r}".encode())
    for name, value in teacher.state_dict().items():
        h.update(name.encode())
        _hash_tensor(h, value)
    return h.hexdigest()


def _teacher_logits(teacher: nn.Module, x: Tensor) -> Tensor:
    out = teacher(x)
    logits = out if isinstance(out, Tensor) else out.logits
    return logits


@torch.no_grad()
def build_cache_table(
    teacher: nn.Module,
    images: Tensor,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    pad: int = 4,
    device: torch.device | str = "cpu",
    batch_size: int = 1024,
    progress: bool = True,
    size: int | None = None,
) -> Tensor:
    """Teacher logits for every view of every image -> (N, num_views(pad), C) bfloat16.

    The N·V (image, view) pairs are enumerated flat, image-major, and run ``batch_size`` pairs
    per forward (full batches even for small N); teacher in eval mode, bf16 autocast +
    channels_last on CUDA, as in the live KD step. ``size``: each view is resized to it after
    the crop + flip, as the loaders do with ``data.resize: batch`` (None: no resize).
    """
    device = torch.device(device)
    N = images.shape[0]
    V = num_views(pad)
    side = 2 * pad + 1
    images = images.to(device)
    # aug of every view id, in view_ids order: id = (dy * side + dx) * 2 + flip
    grid = torch.arange(V, device=device)
    all_aug = torch.stack([grid // (2 * side), (grid // 2) % side, grid % 2], dim=1)
    was_training = teacher.training
    teacher.eval()
    use_cuda = device.type == "cuda"
    memory_format = torch.channels_last if use_cuda else torch.contiguous_format
    flat: Tensor | None = None
    total = N * V
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="teacher cache (views)", unit="view", leave=False)
    try:
        for start in range(0, total, batch_size):
            ids = torch.arange(start, min(start + batch_size, total), device=device)
            img, view = ids // V, ids % V
            # the loader's crop and normalization ops: the same inputs the live teacher sees
            x = render_views(images[img], all_aug[view], pad)
            if size is not None:
                x = resize_batch(x, size)
            x = normalize_batch(x, mean, std)
            x = x.contiguous(memory_format=memory_format)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_cuda):
                logits = _teacher_logits(teacher, x)
            if flat is None:
                flat = torch.empty(total, logits.shape[1], dtype=torch.bfloat16, device=device)
            flat[start : start + len(ids)] = logits.to(torch.bfloat16)
            if bar is not None:
                bar.update(len(ids))
    finally:
        if bar is not None:
            bar.close()
        teacher.train(was_training)
    assert flat is not None
    return flat.view(N, V, -1)


def _has_stored_tables(folder: Path | None) -> bool:
    """Whether ``folder`` holds any stored table (``<key>.pt``), without reading one."""
    if folder is None or not folder.is_dir():
        return False
    return any(p.is_file() for p in folder.glob("*.pt"))


def get_teacher_cache(
    teacher: nn.Module,
    bundle: object,
    *,
    teacher_dir: str | os.PathLike[str] | None,
    device: torch.device | str,
    augment: str,
    representation: str,
    mode: str = "auto",
    pad: int | None = None,
    batch_size: int = 1024,
    progress: bool = True,
) -> TeacherCache | None:
    """Load or build the teacher cache for ``bundle.train``; None when it does not apply.

    Args:
        teacher: frozen teacher; its ``forward(x (B, C, H, W))`` gives logits (B, K) or a
            ``ModelOutput`` with ``.logits``.
        bundle: a ``supkd.data.DataBundle`` (uses ``train``, ``mean``, ``std``).
        teacher_dir: the teacher's run directory (or its ``model.pt``); the table is stored in
            ``teacher_dir/teacher_cache/``. None: built in memory only (mode ``on``) or not
            used (mode ``auto``).
        device: where the table lives and is built.
        augment: the training loader's augmentation (``task.augment``); only pad-crop + flip
            (``"standard"``) has a finite view set.
        representation: the KD representation; only ``"logits"`` is cached.
        pad: crop padding; None takes ``bundle.pad`` (4 for 32×32 data).
        mode: ``off`` never; ``on`` always (raises ``ConfigError`` when it cannot apply,
            e.g. with ``bundle.config.cutout`` > 0: the table holds un-erased views);
            ``auto`` reuses a stored table anywhere and builds one only on CUDA, where it costs
            ~162 teacher epochs of bf16 forwards that a grid of KD runs pays back many times
            (on CPU the same build would take hours). Off CUDA, ``auto`` first lists
            ``teacher_cache/`` and returns None without reading or hashing the training
            images when it holds no table; a stored table that does not match (or is
            damaged) is not rebuilt there either.
    """
    if mode not in MODES:
        raise ConfigError(f"teacher cache mode: expected one of {'|'.join(MODES)}, got {mode!r}")
    if mode == "off":
        return None
    if pad is None:
        pad = int(getattr(bundle, "pad", 4))
    why_not = _why_not_cached(bundle, augment, representation, teacher_dir, mode)
    if why_not is not None:
        if mode == "on":
            raise ConfigError(f"teacher cache mode 'on': cannot apply, {why_not}")
        return None
    views = num_views(pad)
    if mode == "auto" and views > AUTO_MAX_VIEWS:
        if progress:
            print(
                f"supkd: teacher cache off: {views} pad-crop + flip views per image (pad "
                f"{pad}), more than the {AUTO_MAX_VIEWS} it is built for; the teacher runs "
                "live (data.resize=batch keeps the native views; task.teacher_cache=on "
                "builds it anyway)",
                file=sys.stderr,
            )
        return None
    size = getattr(bundle, "resize_to", None)
    device = torch.device(device)
    # auto off CUDA only ever reuses a stored table, never builds one.
    may_build = mode == "on" or device.type == "cuda"
    folder = _cache_folder(teacher_dir)
    if not may_build and not _has_stored_tables(folder):
        # The key hashes every training image (minutes on the full CIFAR-10): skip it when
        # a folder listing already shows there is no table it could find.
        return None
    images = dataset_images(bundle.train)  # type: ignore[attr-defined]
    mean, std = list(bundle.mean), list(bundle.std)  # type: ignore[attr-defined]
    key = cache_key(images, teacher, mean, std, pad, size)
    path = folder / f"{key[:32]}.pt" if folder is not None else None
    if path is not None:
        stored = _read_stored(path, key, len(images), pad, device)
        if stored is not None or not may_build:
            return stored
        path = _writable_or_none(path, mode)  # checked before the build, not after it
        if path is None and mode == "auto":
            return None
    t0 = time.perf_counter()
    table = build_cache_table(
        teacher, images, mean=mean, std=std, pad=pad, device=device, batch_size=batch_size,
        progress=progress, size=size,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    if path is not None:
        atomic_torch_save(
            {"key": key, "format": CACHE_FORMAT, "pad": pad, "logits": table.cpu()}, path
        )
    return TeacherCache(table, pad=pad, key=key, path=path, built=True, build_seconds=seconds)


def _writable_or_none(path: Path, mode: str) -> Path | None:
    """``path`` when the table can be stored there; else None, saying what happens instead
    (a read-only teacher, e.g. on shared storage): ``auto`` runs the teacher live on every
    step, ``on`` builds the table in memory for this run only."""
    folder = path.parent
    existing = next((p for p in (folder, *folder.parents) if p.exists()), folder)
    problem = writable_problem(existing) if existing.is_dir() else "not a folder"
    if problem is None:
        return path
    instead = ("the teacher runs live on every step instead" if mode == "auto" else
               "building the table in memory for this run only (not stored)")
    warnings.warn(f"teacher cache: {folder} cannot be written ({problem}); {instead}",
                  SupkdWarning, stacklevel=3)
    return None


def _why_not_cached(
    bundle: object,
    augment: str,
    representation: str,
    teacher_dir: str | os.PathLike[str] | None,
    mode: str,
) -> str | None:
    """Why a cache cannot apply to this run (a phrase for the ``on`` error), or None."""
    style = getattr(bundle, "style", "small")
    if augment not in CROP_FLIP_AUGMENTS or style != "small":
        return f"augmentation {augment!r} of {style!r} images is not pad-crop + flip"
    if representation != "logits":
        return f"representation {representation!r} is not 'logits'"
    if cutout := getattr(getattr(bundle, "config", None), "cutout", 0):
        # The table holds the 162 un-erased views; cutout erases a random square of each.
        return (
            f"data.cutout = {cutout} erases a square of every view after the "
            "crop + flip, so the teacher must see the erased view live (data.cutout=0 or "
            "task.teacher_cache=auto|off)"
        )
    if teacher_dir is None and mode == "auto":
        return "no teacher directory to store it in"
    return None


def _cache_folder(teacher_dir: str | os.PathLike[str] | None) -> Path | None:
    """``TEACHER_DIR/teacher_cache`` (beside the model file when given one), or None."""
    if teacher_dir is None:
        return None
    root = Path(teacher_dir)
    if root.is_file():
        root = root.parent
    return root / "teacher_cache"


def _read_stored(
    path: Path, key: str, num_images: int, pad: int, device: torch.device
) -> TeacherCache | None:
    """The stored table at ``path`` when it is this key's and the right shape, else None
    (a missing, mismatched or damaged file is rebuilt or skipped by the caller, never fatal)."""
    if not path.is_file():
        return None
    try:
        stored = read_torch_file(path, "teacher cache")
        if stored.get("key") == key and stored["logits"].shape[:2] == (num_images, num_views(pad)):
            return TeacherCache(stored["logits"].to(device), pad=pad, key=key, path=path)
        log.warning("teacher cache %s does not match this teacher/data", path)
    except Exception as exc:
        log.warning("teacher cache %s unreadable (%s)", path, exc)
    return None
