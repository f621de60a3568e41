"""``supkd import-teacher --timm NAME --weights FILE``: a timm network's weights become a
teacher run directory whose outputs on supkd's inputs equal timm's model on the inputs of
its own normalization (timm's ``pretrained_cfg`` mean/std)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from supkd.cli import main
from supkd.models import load_model_record

timm = pytest.importorskip("timm")
from safetensors.torch import save_file  # noqa: E402  (a dependency of timm)

CONVNEXT_ARGS = {"dims": [8, 16, 32, 64], "depths": [1, 1, 1, 1]}
VIT_ARGS = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}
#: written out here, not read from supkd: CIFAR-10's statistics (supkd's cifar10) and
#: ImageNet's (timm's default pretrained_cfg of a ConvNeXt).
CIFAR10 = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _norm(pix, mean, std):
    c = pix.shape[1]
    return (pix - torch.tensor(mean).view(1, c, 1, 1)) / torch.tensor(std).view(1, c, 1, 1)


def test_convnext_weights_for_cifar10_are_corrected_exactly(tmp_path, capsys):
    torch.manual_seed(0)
    ref = timm.create_model("convnext_atto", num_classes=10, **CONVNEXT_ARGS).eval()
    save_file(ref.state_dict(), str(tmp_path / "convnext.safetensors"))
    out = tmp_path / "teacher"
    assert main(["import-teacher", "--timm", "convnext_atto", "--weights",
                 str(tmp_path / "convnext.safetensors"), "--timm-args",
                 json.dumps(CONVNEXT_ARGS), "--data", "cifar10", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "imported timm timm/convnext_atto (10 classes" in printed
    assert "timm pretrained_cfg of convnext_atto" in printed
    rec = load_model_record(out)
    assert rec.info["task"] == "import" and "classifier" in rec.trained_parts
    pix = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = rec.model(_norm(pix, *CIFAR10)).logits
        theirs = ref(_norm(pix, *IMAGENET))
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=0)
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["model"]["name"] == "timm/convnext_atto"
    assert cfg["model"]["timm_args"] == CONVNEXT_ARGS and cfg["data"]["name"] == "cifar10"
    assert cfg["meta"]["imported"]["input_norm"]["mean"] == pytest.approx(IMAGENET[0])
    assert json.loads((out / "result.json").read_text())["status"] == "imported"


def test_vit_pth_weights_with_uniform_statistics(tmp_path):
    torch.manual_seed(0)
    ref = timm.create_model("vit_tiny_patch16_224", num_classes=10, **VIT_ARGS).eval()
    torch.save({"state_dict": ref.state_dict()}, tmp_path / "vit.pth")  # a wrapped file
    out = tmp_path / "vit_teacher"
    assert main(["import-teacher", "--timm", "timm/vit_tiny_patch16_224", "--weights",
                 str(tmp_path / "vit.pth"), "--timm-args", json.dumps(VIT_ARGS), "--data",
                 "cifar10", "--out", str(out)]) == 0
    teacher = load_model_record(out).model
    assert teacher.input_size == (3, 32, 32)
    pix = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = teacher(_norm(pix, *CIFAR10)).logits
        theirs = ref(_norm(pix, (0.5,) * 3, (0.5,) * 3))  # the ViT's pretrained_cfg
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--timm", "convnext_atto"], "--timm: give the weights file with --weights FILE"),
        (["--timm", "convnext_attoo", "--weights", "W"], "closest: convnext_atto"),
        (["--timm", "convnext_atto", "--weights", "W", "--arch", "resnet18"],
         "--arch: not used with --timm"),
        (["--weights", "W"], "--weights/--timm-args: only used with --timm NAME"),
        (["--timm", "convnext_atto", "--weights", "W", "--timm-args", "[1]"],
         "--timm-args: expected a YAML mapping"),
        (["--timm", "convnext_atto", "--weights", "W", "--timm-args", "{dims: [8, 8, 8, 8]}"],
         "weights do not fit timm/convnext_atto"),
    ],
)
def test_bad_requests_are_one_line(tmp_path, capsys, argv, message):
    torch.manual_seed(0)
    ref = timm.create_model("convnext_atto", num_classes=10, **CONVNEXT_ARGS)
    save_file(ref.state_dict(), str(tmp_path / "w.safetensors"))
    argv = [str(tmp_path / "w.safetensors") if a == "W" else a for a in argv]
    if "--timm-args" not in argv and "convnext_atto" in argv:
        argv += ["--timm-args", json.dumps(CONVNEXT_ARGS)]
    if argv[0] == "--weights":
        argv = [str(tmp_path / "w.safetensors"), *argv]  # a source plus --weights
    assert main(["import-teacher", *argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out" / "model.pt").exists()
