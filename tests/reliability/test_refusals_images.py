"""Refusal catalogue (issue 16), image folders: every layout, link and file that would give a
silently different data set is a one-line refusal naming it, or is read correctly; and
``result.json`` records what a run saw.

Trees are generated with Pillow in the test's folder; runs are ``supkd train`` in process on
8x8 images for one step. A refusal may leave a failed-run record in ``--out`` (the run's own
folder) and nothing anywhere else.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from catalogue import refused, run_cli, warned, write_cfg

from supkd.data.images import decode_image_bytes

pytestmark = pytest.mark.usefixtures("in_tmp")


def _pixels(seed: int, size: int = 8, channels: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (size, size, channels), dtype=np.uint8)


def _save(path: Path, fmt: str = "png", mode: str = "RGB", seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = PIL.Image.fromarray(_pixels(seed)).convert(mode)
    im.save(path, **({"lossless": True} if fmt == "webp" else {}))
    return path


def _tree(root: Path, classes=("a", "b"), n: int = 5, fmt: str = "png") -> Path:
    for c in classes:
        for i in range(n):
            _save(root / c / f"{i}.{fmt}", fmt, seed=hash((c, i)) % 1000)
    return root


def _train(tmp_path: Path, root: Path, *extra: str) -> list[str]:
    cfg = tmp_path / "c.yaml"
    if not cfg.exists():
        write_cfg(cfg)
    return ["train", str(cfg), "data.name=imagefolder", f"data.root={root}",
            "data.image_size=8", "data.subset=null", "data.val_fraction=0", "train.batch_size=4",
            *extra, "--out", str(tmp_path / "out"), "--quiet"]


# ================================================================ layouts and links
def _train_only(t: Path) -> tuple[Path, str]:
    _tree(t / "root" / "train")
    return t / "root", "no val/ or test/"


def _val_only(t: Path) -> tuple[Path, str]:
    _tree(t / "root" / "val")
    return t / "root", "no train/"


def _test_only(t: Path) -> tuple[Path, str]:
    _tree(t / "root" / "test")
    return t / "root", "no train/"


def _loop_to_root(t: Path) -> tuple[Path, str]:
    root = _tree(t / "root")
    os.symlink("..", root / "a" / "up")
    return root, "a loop"


def _loop_to_itself(t: Path) -> tuple[Path, str]:
    root = _tree(t / "root")
    os.symlink(".", root / "a" / "again")
    return root, "a loop"


def _class_links_class(t: Path) -> tuple[Path, str]:
    root = _tree(t / "root")
    os.symlink("../a", root / "b" / "more")
    return root, "counted twice"


def _val_is_train(t: Path) -> tuple[Path, str]:
    _tree(t / "root" / "train")
    os.symlink("train", t / "root" / "val")
    return t / "root", "two splits"


def _file_link_inside(t: Path) -> tuple[Path, str]:
    root = _tree(t / "root")
    os.symlink("../a/0.png", root / "b" / "copy.png")
    return root, "counted twice"


def _two_links_one_file(t: Path) -> tuple[Path, str]:
    root = _tree(t / "root")
    outside = _save(t / "elsewhere" / "x.png")
    os.symlink(outside, root / "a" / "x1.png")
    os.symlink(outside, root / "b" / "x2.png")
    return root, "counted twice"


def _broken_file_link(t: Path) -> tuple[Path, str]:
    root = _tree(t / "root")
    os.symlink(t / "gone.png", root / "a" / "gone.png")
    return root, "broken symlink"


def _broken_class_link(t: Path) -> tuple[Path, str]:
    root = _tree(t / "root")
    os.symlink(t / "gone", root / "c")
    return root, "broken symlink"


def _zero_byte(t: Path) -> tuple[Path, str]:
    root = _tree(t / "root")
    (root / "a" / "empty.gif").write_bytes(b"")
    return root, "empty.gif"


def _no_readable_type(t: Path) -> tuple[Path, str]:
    root = _tree(t / "root")
    (root / "c").mkdir()
    (root / "c" / "notes.txt").write_text("x")
    (root / "c" / "logo.svg").write_text("<svg/>")
    return root, "holds no images"


def _one_image_per_class(t: Path) -> tuple[Path, str]:
    return _tree(t / "root", n=1), "test split is empty"


def _root_is_a_file(t: Path) -> tuple[Path, str]:
    (t / "root").write_text("x")
    return t / "root", "not found"


def _val_classes_differ(t: Path) -> tuple[Path, str]:
    _tree(t / "root" / "train")
    _tree(t / "root" / "val", classes=("a", "b", "c"))
    return t / "root" / "val", "classes differ"


LAYOUTS = [_train_only, _val_only, _test_only, _loop_to_root, _loop_to_itself,
           _class_links_class, _val_is_train, _file_link_inside, _two_links_one_file,
           _broken_file_link, _broken_class_link, _zero_byte, _no_readable_type,
           _one_image_per_class, _root_is_a_file, _val_classes_differ]


@pytest.mark.parametrize("make", LAYOUTS, ids=[f.__name__.strip("_") for f in LAYOUTS])
def test_a_misleading_tree_is_refused_naming_it(tmp_path, capsys, make):
    named, needle = make(tmp_path)
    root = named if make not in (_val_classes_differ,) else named.parent
    refused(capsys, _train(tmp_path, root), str(named), needle, watch=[tmp_path],
            allowed=[tmp_path / "out"])


# ======================================================== files that do not decode
UNDECODABLE = {
    "garbage.bmp": b"BM" + b"\x00" * 40,
    "garbage.ppm": b"P6\n8 8\n255\n" + b"\x01" * 10,
    "garbage.tif": b"II*\x00" + b"\x00" * 40,
    "garbage.png": b"this is not an image" * 5,
    "garbage.webp": b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x00" * 20,
    "garbage.gif": b"GIF89a" + b"\x00" * 20,
}


@pytest.mark.parametrize("name", [*UNDECODABLE, "truncated.png", "float.tif"])
def test_a_file_that_does_not_decode_is_named_with_its_whole_reason(tmp_path, capsys, name):
    root = _tree(tmp_path / "root")
    bad = root / "a" / name
    if name == "truncated.png":
        full = _save(tmp_path / "full.png").read_bytes()
        bad.write_bytes(full[: len(full) // 2])
    elif name == "float.tif":
        PIL.Image.fromarray(np.zeros((8, 8), np.float32)).save(bad)
    else:
        bad.write_bytes(UNDECODABLE[name])
    line = refused(capsys, _train(tmp_path, root), str(bad), "cannot decode", watch=[tmp_path],
                   allowed=[tmp_path / "out"])
    reason = line.split(f"{bad}: ", 1)[1]
    assert reason and ".cpp" not in reason and "/__w/" not in reason, line


# ============================================== formats and modes that are read correctly
def _reference(path: Path) -> torch.Tensor:
    """What the file holds, through Pillow: RGB, first frame, 16-bit as its top 8 bits."""
    with PIL.Image.open(path) as im:
        if im.mode in ("I;16", "I;16B", "I"):
            g = (np.asarray(im).astype(np.int64) >> 8).astype(np.uint8)
            arr = np.repeat(g[..., None], 3, axis=2)
        else:
            arr = np.asarray(im.convert("RGB"))
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def _animated_gif(path: Path) -> None:
    frames = [PIL.Image.fromarray(_pixels(s)).convert("P") for s in range(3)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50)


def _sixteen_bit(path: Path) -> None:
    arr = np.random.default_rng(3).integers(0, 65536, (8, 8), dtype=np.uint16)
    PIL.Image.fromarray(arr).save(path)


FORMATS = {
    "rgb.ppm": ("ppm", "RGB"), "gray.pgm": ("ppm", "L"), "bits.pbm": ("ppm", "1"),
    "rgb.bmp": ("bmp", "RGB"), "palette.bmp": ("bmp", "P"), "rgb.tif": ("tif", "RGB"),
    "cmyk.tif": ("tif", "CMYK"), "rgb.gif": ("gif", "P"), "lossless.webp": ("webp", "RGB"),
    "palette.png": ("png", "P"), "gray.png": ("png", "L"), "rgba.png": ("png", "RGBA"),
    "gray-alpha.png": ("png", "LA"),
}


@pytest.mark.parametrize("name", [*FORMATS, "animated.gif", "16bit.png", "16bit.tif"])
def test_a_readable_format_decodes_to_the_same_pixels_as_pillow(tmp_path, name):
    path = tmp_path / name
    if name == "animated.gif":
        _animated_gif(path)
    elif name.startswith("16bit"):
        _sixteen_bit(path)
    else:
        _save(path, *FORMATS[name])
    image = decode_image_bytes(path.read_bytes(), path.suffix)
    assert image.dtype == torch.uint8 and image.shape == (3, 8, 8)
    assert torch.equal(image, _reference(path)), name


def test_a_tree_mixing_formats_and_bit_depths_trains(tmp_path, capsys):
    """8-bit RGB with 16-bit, palette, gray and alpha PNGs, PPM, BMP, GIF and TIFF in one
    tree (today: a crash on the first 16-bit image)."""
    root = _tree(tmp_path / "root")
    for c in ("a", "b"):
        _sixteen_bit(root / c / "deep.png")
        _save(root / c / "pal.png", "png", "P")
        _save(root / c / "gray.png", "png", "L")
        _save(root / c / "alpha.png", "png", "RGBA")
        _save(root / c / "x.ppm", "ppm")
        _save(root / c / "x.bmp", "bmp")
        _save(root / c / "x.gif", "gif", "P")
        _save(root / c / "x.tif", "tif")
    code, lines, _ = run_cli(capsys, _train(tmp_path, root))
    assert code == 0, lines
    data = json.loads((tmp_path / "out" / "result.json").read_text())["data"]
    assert data["train"] + data["test"] == 26


def test_a_single_class_is_warned_about(tmp_path, capsys):
    root = _tree(tmp_path / "root", classes=("only",), n=8)
    warned(capsys, _train(tmp_path, root), "single class", "'only'")


def test_classes_without_a_training_image_are_warned_about(tmp_path, capsys):
    cfg = write_cfg(tmp_path / "c.yaml")
    warned(capsys, ["train", str(cfg), "data.subset=4", "train.batch_size=2", "--out",
                    str(tmp_path / "out"), "--quiet"], "no image in the training split")


# ============================================================ result.json: what a run saw
def _data_of(tmp_path: Path, capsys, argv: list[str], out: str) -> dict:
    code, lines, _ = run_cli(capsys, [*argv[:-3], "--out", str(tmp_path / out), "--quiet"])
    assert code == 0, lines
    return json.loads((tmp_path / out / "result.json").read_text())["data"]


def test_result_records_images_per_split_and_a_stable_fingerprint(tmp_path, capsys):
    from supkd.config import DataConfig
    from supkd.data import build_data

    cfg = write_cfg(tmp_path / "c.yaml")
    argv = ["train", str(cfg), "--out", "x", "--quiet"]
    first, again = _data_of(tmp_path, capsys, argv, "r1"), _data_of(tmp_path, capsys, argv, "r2")
    bundle = build_data(DataConfig(name="digits", subset=64, num_workers=0), seed=0)
    assert {k: first[k] for k in ("train", "val", "test")} == {
        "train": len(bundle.train), "val": len(bundle.val), "test": len(bundle.test)}
    assert first["fingerprint"].startswith("sha256:") and first == again


@pytest.mark.parametrize("change", ["replace", "rename", "relabel"])
def test_the_fingerprint_shows_a_changed_image_folder(tmp_path, capsys, change):
    root = _tree(tmp_path / "root")
    argv = _train(tmp_path, root)
    before = _data_of(tmp_path, capsys, argv, "r1")
    if change == "replace":  # same name, other content
        (root / "a" / "0.png").write_bytes(_save(tmp_path / "big.png", seed=99).read_bytes()
                                           + b"\x00" * 7)
    elif change == "rename":
        (root / "a" / "0.png").rename(root / "a" / "9.png")
    else:
        (root / "a" / "0.png").rename(root / "b" / "5.png")
    after = _data_of(tmp_path, capsys, argv, "r2")
    assert after["fingerprint"] != before["fingerprint"]
