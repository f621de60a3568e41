"""The exact teacher cache with a timm teacher, also on per-batch resized views (a ViT at 32
pixels on 16-pixel digits), and its ``auto`` mode turning itself off for crop sets larger than
the 162 views it is built for."""

from __future__ import annotations

import json

import pytest
import torch

from supkd.config import DataConfig
from supkd.data import build_data, make_loader
from supkd.models import create_model
from supkd.train import run
from supkd.train import teacher_cache as tc
from supkd.train.checks import load_run_config


def _vit(timm_tiny):
    name, args = timm_tiny["vit"]
    torch.manual_seed(0)
    return create_model(name, num_classes=10, in_channels=1, timm_args=args).eval()


@pytest.mark.parametrize("resize", ["batch", "load"])
def test_cached_logits_are_the_live_timm_teachers(timm_tiny, tmp_path, resize):
    bundle = build_data(DataConfig(name="digits", image_size=32, resize=resize, subset=12,
                                   val_fraction=0.0), seed=0)
    # batch: crops of the 16-pixel digits (pad 2: 50 views) resized to 32; load: crops of
    # the 32-pixel copy (pad 4: 162 views).
    assert tc.num_views(bundle.pad) == (50 if resize == "batch" else 162)
    teacher = _vit(timm_tiny)
    cache = tc.get_teacher_cache(teacher, bundle, teacher_dir=tmp_path, device="cpu",
                                 augment="standard", representation="logits", mode="on",
                                 progress=False)
    assert cache is not None and cache.built and cache.path.is_file()
    assert cache.logits.shape == (12, tc.num_views(bundle.pad), 10)
    for gpu in ("off", "on"):
        for batch in make_loader(bundle, "train", 6, train=True, seed=1, gpu_resident=gpu):
            with torch.no_grad():
                live = teacher(batch.x).logits
            # bf16 table: ~3 significant digits.
            torch.testing.assert_close(cache.lookup(batch.index, batch.aug), live,
                                       rtol=2e-2, atol=2e-2)
    # Stored beside the teacher, found again by its key (which counts the resize).
    again = tc.get_teacher_cache(teacher, bundle, teacher_dir=tmp_path, device="cpu",
                                 augment="standard", representation="logits", mode="auto",
                                 progress=False)
    assert again is not None and not again.built and again.key == cache.key


def test_auto_turns_itself_off_for_more_than_162_views(timm_tiny, tmp_path, capsys):
    bundle = build_data(DataConfig(name="digits", image_size=40, resize="load", subset=4,
                                   val_fraction=0.0), seed=0)
    assert tc.num_views(bundle.pad) == 242  # pad 5 on the 40-pixel copy
    out = tc.get_teacher_cache(_vit_40(timm_tiny), bundle, teacher_dir=tmp_path,
                               device="cpu", augment="standard", representation="logits",
                               mode="auto", progress=True)
    assert out is None
    err = capsys.readouterr().err
    assert "teacher cache off: 242 pad-crop + flip views per image" in err
    assert "data.resize=batch" in err and not (tmp_path / "teacher_cache").exists()


def _vit_40(timm_tiny):
    name, args = timm_tiny["vit"]
    return create_model(name, num_classes=10, in_channels=1,
                        timm_args={**args, "img_size": 40}).eval()


def test_a_distill_run_uses_the_cache_of_a_timm_teacher(timm_tiny, tmp_path):
    name, args = timm_tiny["vit"]
    base = ["data.name=digits", "data.image_size=32", "data.subset=16", "data.val_fraction=0",
            "data.num_workers=0", "train.batch_size=8", "train.epochs=1", "optim.lr=0.01",
            "train.steps_per_epoch=2", "train.progress=false"]
    teacher = tmp_path / "vit"
    res = run(load_run_config({"name": "vit"}, [*base, f"model.name={name}",
                                                f"model.timm_args={json.dumps(args)}"]),
              teacher, quiet=True)
    assert res["status"] == "completed"
    kd = load_run_config({"name": "kd"}, [*base, "model.width=4", "task.name=distill",
                                          f"task.teacher={teacher}", "task.loss=hinton_kl",
                                          "task.teacher_cache=on"])
    assert run(kd, tmp_path / "kd", quiet=True)["status"] == "completed"
    tables = list((teacher / "teacher_cache").glob("*.pt"))
    assert len(tables) == 1
    stored = torch.load(tables[0], weights_only=True)
    assert stored["logits"].shape == (16, 50, 10)  # 16 images, 50 views of 16-pixel digits
