"""Each data set loads; bad input fails with a one-line DataError naming the file."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.io import encode_jpeg

from supkd.data import DataConfig, build_data, make_loader
from supkd.data.datasets import load_jpeg_pack
from supkd.errors import DataError

# encode_jpeg (used to write test images) warns about torchvision's codec deprecation.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:torchvision")


def test_digits_shapes_splits_and_stats() -> None:
    b = build_data(DataConfig(name="digits"), seed=0)
    assert (b.num_classes, b.in_channels, b.image_size) == (10, 1, 16)
    assert len(b.train) + len(b.val) + len(b.test) == 1797
    assert len(b.test) == round(0.2 * 1797)
    assert len(b.val) == round(0.1 * (1797 - len(b.test)))
    x, y = b.train[0]
    assert x.dtype == torch.uint8 and x.shape == (1, 16, 16) and 0 <= y < 10
    # Stratified: each split holds every class in proportion to the whole set (within 1).
    from sklearn.datasets import load_digits

    full = torch.bincount(torch.from_numpy(load_digits().target), minlength=10).float()
    for ds in (b.train, b.val, b.test):
        counts = torch.bincount(ds.labels, minlength=10).float()
        assert (counts - full * len(ds) / 1797).abs().max() <= 1.0
    # Validation images are held out of the training set: no duplicates across splits.
    tr = {t.numpy().tobytes() for t in b.train.images}
    assert not any(v.numpy().tobytes() in tr for v in b.val.images[:50])
    # Statistics measured on the training split.
    pix = b.train.images.float() / 255
    assert b.mean[0] == pytest.approx(pix.mean().item()) and b.std[0] == pytest.approx(
        pix.std().item()
    )


def test_split_seed_fixed_by_default_and_run_seed_when_none() -> None:
    a = build_data(DataConfig(name="digits", subset=200), seed=0)
    b = build_data(DataConfig(name="digits", subset=200), seed=1)
    assert torch.equal(a.val.images, b.val.images)
    c = build_data(DataConfig(name="digits", subset=200, split_seed=None), seed=1)
    assert not torch.equal(a.val.images, c.val.images)
    assert len(a.train) == 200 and len(a.test) == 200 and len(a.val) == 144


def test_cifar10_jpeg_pack_counts_and_balance(cifar10_jpeg_dir: Path) -> None:
    # Labels only (no decoding): 50,000 / 10,000 images in 10 balanced classes.
    for split, n in (("train", 50_000), ("test", 10_000)):
        src = load_jpeg_pack(cifar10_jpeg_dir / f"{split}.npz")
        assert len(src.labels) == n
        assert torch.bincount(src.labels).tolist() == [n // 10] * 10


def test_cifar10_jpeg_subset_loads(cifar10_jpeg_dir: Path) -> None:
    cfg = DataConfig(name="cifar10-jpeg", root=str(cifar10_jpeg_dir), subset=100)
    b = build_data(cfg, seed=0)
    assert b.classes[:3] == ["airplane", "automobile", "bird"] and b.num_classes == 10
    assert len(b.train) == len(b.val) == len(b.test) == 100
    assert b.train.images.shape == (100, 3, 32, 32) and b.train.images.dtype == torch.uint8
    assert torch.bincount(b.test.labels, minlength=10).tolist() == [10] * 10
    # Decoded pixels look like natural images (not all zeros / noise).
    m = b.test.images.float().mean().item() / 255
    assert 0.3 < m < 0.65


def _write_pack(path: Path, n: int = 6, **override: np.ndarray) -> None:
    imgs = [encode_jpeg(torch.full((3, 8, 8), 40 * i, dtype=torch.uint8)) for i in range(n)]
    blob = torch.cat(imgs).numpy()
    offsets = np.cumsum([0] + [len(t) for t in imgs]).astype(np.int64)
    arrays = {
        "jpeg": blob,
        "offsets": offsets,
        "labels": np.array([i % 2 for i in range(n)], dtype=np.uint8),
        "classes": np.array(["a", "b"]),
    }
    arrays.update(override)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})


def test_pack_roundtrip_and_bad_packs(tmp_path: Path) -> None:
    _write_pack(tmp_path / "train.npz")
    _write_pack(tmp_path / "test.npz")
    b = build_data(DataConfig(name="cifar10-jpeg", root=str(tmp_path), val_fraction=0), seed=0)
    assert b.train.images.shape == (6, 3, 8, 8) and b.classes == ["a", "b"]
    assert abs(int(b.train.images[2].float().mean()) - 80) <= 2  # JPEG of a flat image

    _write_pack(tmp_path / "test.npz", labels=None)
    with pytest.raises(DataError, match=r"test\.npz: missing array 'labels'"):
        build_data(DataConfig(name="cifar10-jpeg", root=str(tmp_path)), seed=0)
    _write_pack(tmp_path / "test.npz", labels=np.array([0, 1, 2, 0, 1, 0], dtype=np.uint8))
    with pytest.raises(DataError, match=r"test\.npz: labels out of range.*expected 0\.\.1"):
        build_data(DataConfig(name="cifar10-jpeg", root=str(tmp_path)), seed=0)
    _write_pack(tmp_path / "test.npz", offsets=np.array([0, 5, 3, 9, 12, 14, 99], dtype=np.int64))
    with pytest.raises(DataError, match=r"test\.npz: array 'offsets'"):
        build_data(DataConfig(name="cifar10-jpeg", root=str(tmp_path)), seed=0)
    # A pack whose bytes decode badly: image index named.
    _write_pack(tmp_path / "test.npz")
    z = dict(np.load(tmp_path / "test.npz"))
    z["jpeg"][z["offsets"][3] : z["offsets"][3] + 4] = 0  # break image 3's JPEG header
    np.savez(tmp_path / "test.npz", **z)
    with pytest.raises(DataError, match=r"test\.npz: image 3 does not decode"):
        build_data(DataConfig(name="cifar10-jpeg", root=str(tmp_path)), seed=0)
    with pytest.raises(DataError, match="not found"):
        build_data(DataConfig(name="cifar10-jpeg", root=str(tmp_path / "nope")), seed=0)


@pytest.mark.parametrize(
    "kind", ["not_a_zip", "zip_header_only", "truncated_npz", "corrupt_member", "plain_npy"]
)
def test_pack_that_is_not_an_npz_names_the_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "train.npz"
    if kind == "not_a_zip":
        path.write_bytes(b"just some text, not an archive")
    elif kind == "zip_header_only":
        path.write_bytes(b"PK\x03\x04 truncated zip")  # zipfile.BadZipFile inside numpy
    elif kind == "plain_npy":
        with path.open("wb") as f:
            np.save(f, np.zeros(4))
    else:
        _write_pack(path)
        data = bytearray(path.read_bytes())
        if kind == "truncated_npz":
            data = data[: len(data) // 2]
        else:  # flip bytes inside the first member's data: CRC / format error on read
            data[100:140] = bytes(40)
        path.write_bytes(bytes(data))
    with pytest.raises(DataError) as err:
        load_jpeg_pack(path)
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg
    assert "not a readable .npz" in msg or "missing array" in msg or "array '" in msg


def test_cifar10_absent_offline_names_folder(tmp_path: Path) -> None:
    cfg = DataConfig(name="cifar10", root=str(tmp_path), download=False)
    with pytest.raises(DataError) as err:
        build_data(cfg, seed=0)
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path) in msg and "cifar-10-batches-py" in msg
    with pytest.raises(DataError, match="cifar-100-python"):
        build_data(DataConfig(name="cifar100", root=str(tmp_path), download=False), seed=0)


def _write_tree(root: Path, classes: dict[str, int], size: int = 12) -> None:
    g = torch.Generator().manual_seed(0)
    for k, (c, n) in enumerate(classes.items()):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = torch.randint(0, 60, (3, size, size + i), generator=g, dtype=torch.uint8) + 60 * k
            (root / c / f"{i}.jpg").write_bytes(encode_jpeg(img).numpy().tobytes())


def test_imagefolder_single_tree_and_loader(tmp_path: Path) -> None:
    _write_tree(tmp_path, {"cat": 10, "dog": 10})
    cfg = DataConfig(name="imagefolder", root=str(tmp_path), image_size=8, val_fraction=0.25)
    b = build_data(cfg, seed=0)
    assert b.classes == ["cat", "dog"] and b.style == "imagenet" and b.in_channels == 3
    assert (len(b.train), len(b.val), len(b.test)) == (12, 4, 4)
    x, y = b.train[0]
    assert x.dtype == torch.uint8 and x.shape[0] == 3 and y in (0, 1)
    for augment in ("standard", "none", "supcon"):
        views = 2 if augment == "supcon" else 1
        loader = make_loader(b, "train", 5, train=True, augment=augment, views=views, seed=0)
        batches = list(loader)
        assert len(batches) == len(loader) == 2
        shape = (5, 2, 3, 8, 8) if views == 2 else (5, 3, 8, 8)
        assert batches[0].x.shape == shape and torch.isfinite(batches[0].x).all()
        assert batches[0].aug is None  # crop parameters are only reported for pad-crop + flip


def test_imagefolder_train_val_layout(tmp_path: Path) -> None:
    _write_tree(tmp_path / "train", {"a": 4, "b": 4, "c": 4})
    _write_tree(tmp_path / "val", {"a": 2, "b": 2, "c": 2})
    b = build_data(DataConfig(name="imagefolder", root=str(tmp_path), val_fraction=0), seed=0)
    assert (len(b.train), b.val, len(b.test), b.image_size) == (12, None, 6, 224)
    batch = next(iter(make_loader(b, "test", 6, train=False)))
    assert batch.x.shape == (6, 3, 224, 224) and batch.y.tolist() == [0, 0, 1, 1, 2, 2]
    _write_tree(tmp_path / "val", {"d": 1})
    with pytest.raises(DataError, match="classes differ"):
        build_data(DataConfig(name="imagefolder", root=str(tmp_path)), seed=0)


def test_imagefolder_bad_input(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"image folder .*missing.* not found"):
        build_data(DataConfig(name="imagefolder", root=str(tmp_path / "missing")), seed=0)
    (tmp_path / "empty_root").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        build_data(DataConfig(name="imagefolder", root=str(tmp_path / "empty_root")), seed=0)
    _write_tree(tmp_path / "t", {"a": 3})
    (tmp_path / "t" / "b").mkdir()
    with pytest.raises(DataError, match=r"class folder .*/t/b holds no images"):
        build_data(DataConfig(name="imagefolder", root=str(tmp_path / "t")), seed=0)


def test_zero_byte_jpeg_fails_at_scan(tmp_path: Path) -> None:
    _write_tree(tmp_path, {"a": 3, "b": 3})
    (tmp_path / "b" / "empty.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=r"image file .*/b/empty\.jpg is empty \(0 bytes\)"):
        build_data(DataConfig(name="imagefolder", root=str(tmp_path)), seed=0)


@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_jpeg_fails_fast_naming_file(tmp_path: Path, workers: int) -> None:
    _write_tree(tmp_path, {"a": 4, "b": 4})
    (tmp_path / "a" / "2.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    cfg = DataConfig(name="imagefolder", root=str(tmp_path), val_fraction=0, image_size=8)
    b = build_data(cfg, seed=0)  # the scan only stats files: decoding finds the bad one
    with pytest.raises(DataError) as err:
        for split in ("train", "test"):  # the bad file is in one of them
            list(make_loader(b, split, 2, train=split == "train", num_workers=workers))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("cannot decode image file") and "/a/2.jpg" in msg


def test_our_decode_calls_emit_no_codec_deprecation_warning(tmp_path: Path) -> None:
    """torchvision 0.29 warns on every image codec call; the data code silences its own
    decodes (ImageFolder reads, JPEG pack batches, the per-image search for a bad one)."""
    _write_tree(tmp_path / "tree", {"a": 3, "b": 3})
    (tmp_path / "tree" / "b" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    (tmp_path / "pack").mkdir()
    _write_pack(tmp_path / "pack" / "train.npz")
    _write_pack(tmp_path / "pack" / "test.npz")
    z = dict(np.load(tmp_path / "pack" / "test.npz"))
    z["jpeg"][z["offsets"][2] : z["offsets"][2] + 4] = 0
    np.savez(tmp_path / "pack" / "bad.npz", **z)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        tree = build_data(
            DataConfig(name="imagefolder", root=str(tmp_path / "tree"), val_fraction=0), seed=0
        )
        decoded = 0
        for ds in (tree.train, tree.test):
            for i in range(len(ds)):
                try:
                    ds[i]
                    decoded += 1
                except DataError:
                    pass
        pack = build_data(
            DataConfig(name="cifar10-jpeg", root=str(tmp_path / "pack"), val_fraction=0), seed=0
        )
        with pytest.raises(DataError, match="image 2"):
            load_jpeg_pack(tmp_path / "pack" / "bad.npz").take(torch.arange(6))
    assert decoded == 6 and len(pack.train) == 6
    codec = [w for w in seen if issubclass(w.category, DeprecationWarning)]
    assert codec == [], [str(w.message)[:80] for w in codec]
