"""End to end through the CLI: a ViT teacher from timm trained by ``supkd train``, distilled
into a supkd ResNet-18, then ``supkd cka`` between the two architectures (the full stage ×
stage heatmap, and Fig. 2's line pairing ViT blocks with ResNet stages by relative depth)."""

from __future__ import annotations

import json

import pytest
import torch

from supkd.analysis.layerwise import match_stages
from supkd.cli import main
from supkd.models import load_model

pytest.importorskip("timm")

VIT = ("model.name=timm/vit_tiny_patch16_224",
       "model.timm_args={img_size: 32, patch_size: 8, depth: 6, embed_dim: 32, num_heads: 2}")
COMMON = ("data.name=digits", "data.image_size=32", "data.subset=48", "data.val_fraction=0",
          "data.num_workers=0", "train.batch_size=16", "train.epochs=1",
          "train.steps_per_epoch=2", "optim.lr=0.01")
RESNET_STAGES = ["stem", "layer1", "layer2", "layer3", "layer4"]


def test_vit_teacher_resnet18_student_and_their_cka(tmp_path, capsys):
    config = tmp_path / "vit.yaml"
    config.write_text("name: vit_teacher\n", encoding="utf-8")
    teacher, student, out = tmp_path / "vit", tmp_path / "kd", tmp_path / "cka"
    assert main(["train", str(config), "--out", str(teacher), "--quiet", *COMMON, *VIT]) == 0
    assert main(["train", str(config), "--out", str(student), "--quiet", *COMMON,
                 "name=kd", "model.name=resnet18", "model.width=4", "task.name=distill",
                 f"task.teacher={teacher}", "task.loss=logit_mse"]) == 0
    assert load_model(student).spec["name"] == "resnet18"
    capsys.readouterr()
    assert main(["cka", "--teacher", str(teacher), "--student", str(student), "--out",
                 str(out), "--batch-size", "16"]) == 0
    printed = capsys.readouterr().out
    doc = json.loads((out / "cka.json").read_text())

    blocks = [f"blocks.{i}" for i in range(6)]
    assert doc["teacher_stages"] == [*blocks, "embedding", "logits"]
    entry = doc["students"][0]
    assert entry["stages"] == [*RESNET_STAGES, "embedding", "logits"]
    # The full heatmap: every ViT stage against every ResNet stage.
    matrix = torch.tensor(entry["matrix"])
    assert matrix.shape == (8, 7) and torch.isfinite(matrix).all()
    # Fig. 2's line: 5 ResNet stages over 6 blocks, by relative depth k/5 -> block
    # floor(6k/5 + 1/2): 1, 2, 4, 5, 6 (1-based), then embedding and logits by name.
    expected = {"blocks.0": "stem", "blocks.1": "layer1", "blocks.3": "layer2",
                "blocks.4": "layer3", "blocks.5": "layer4", "embedding": "embedding",
                "logits": "logits"}
    assert entry["matched"] == expected == dict(match_stages(doc["teacher_stages"],
                                                             entry["stages"]))
    for a, b in expected.items():
        i, j = doc["teacher_stages"].index(a), entry["stages"].index(b)
        assert entry["diagonal"][a] == pytest.approx(matrix[i, j].item())
    assert doc["per_stage"]["stages"] == list(expected)
    assert all(v == pytest.approx(1.0, abs=1e-5) for v in doc["sanity"].values())
    assert (out / entry["heatmap"]).stat().st_size > 0
    assert (out / "cka_per_stage.png").stat().st_size > 0
    assert "blocks.0" in printed and "wrote" in printed
