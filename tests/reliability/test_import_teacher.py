"""Teacher import: SupContrast checkpoints, torchvision weights, supkd runs.

Source networks are built inside the tests (tests/reliability/supcontrast_reference.py has
the public SupContrast key layout; torchvision's ResNet with random weights), with
randomized BatchNorm statistics so that any mis-mapped tensor changes the outputs. The
imported model must reproduce the source outputs exactly (same ops, same weights).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest
import torch
import torchvision
import yaml

from supkd.cli import main
from supkd.errors import CheckpointError
from supkd.importers import import_teacher, strip_module_prefix

sys.path.insert(0, str(Path(__file__).parent))
from supcontrast_reference import (
    LinearClassifierNet,
    SupCENet,
    SupConNet,
    randomize_bn,
)


def _save_supcontrast(net: torch.nn.Module, path: Path, *, wrap_encoder: bool = True) -> None:
    """Save as SupContrast's ``save_model`` does: opt Namespace, model, optimizer, epoch;
    with the encoder wrapped in DataParallel as its training script does."""
    if wrap_encoder:
        net.encoder = torch.nn.DataParallel(net.encoder)
    state = {
        "opt": argparse.Namespace(model="resnet", learning_rate=0.5, lr_decay_epochs=[700, 800]),
        "model": net.state_dict(),
        "optimizer": torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9).state_dict(),
        "epoch": 1000,
    }
    if wrap_encoder:
        net.encoder = net.encoder.module
    torch.save(state, path)


@pytest.fixture(scope="module")
def supcon18(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("supcon18")
    net = SupConNet("resnet18", feat_dim=32)
    randomize_bn(net, seed=1)
    cls = LinearClassifierNet(512, 10)
    _save_supcontrast(net, d / "ckpt.pth")
    torch.save(
        {"opt": argparse.Namespace(), "model": cls.state_dict(), "epoch": 100}, d / "cls.pth"
    )
    return net.eval(), cls.eval(), d


def _batch(size: int = 32, n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(7))


def test_supcontrast_checkpoint_with_linear_classifier_reproduces_outputs(supcon18):
    net, cls, d = supcon18
    # raw network outputs: no input correction (tested in test_import_input_norm.py)
    imp = import_teacher(
        d / "ckpt.pth", arch="resnet18", classifier=d / "cls.pth", input_norm="none"
    )
    assert (imp.format, imp.arch, imp.stem, imp.num_classes) == (
        "supcontrast",
        "resnet18",
        "cifar",
        10,
    )
    x = _batch()
    with torch.no_grad():
        out = imp.model(x)
        feat = net.encoder(x)
        torch.testing.assert_close(out.embedding, feat, rtol=0, atol=0)
        torch.testing.assert_close(out.projection, net(x), rtol=0, atol=0)
        torch.testing.assert_close(out.logits, cls(feat), rtol=0, atol=0)


def test_supcontrast_resnet50_whole_model_dataparallel(tmp_path):
    """ResNet-50 (Bottleneck, the paper's teacher), saved with the *whole* model wrapped
    (``module.encoder.*``, ``module.head.*``) and no classifier: logits are zeros."""
    torch.manual_seed(1)
    net = SupConNet("resnet50", feat_dim=128)
    randomize_bn(net, seed=2)
    dp = torch.nn.DataParallel(net)
    torch.save({"model": dp.state_dict()}, tmp_path / "r50.pth")
    assert next(iter(dp.state_dict())).startswith("module.encoder.")
    imp = import_teacher(tmp_path / "r50.pth", arch="resnet50", num_classes=100, input_norm="none")
    assert not imp.has_classifier and imp.notes
    x = _batch(n=2)
    with torch.no_grad():
        out = imp.model(x)
        torch.testing.assert_close(out.projection, net.eval()(x), rtol=0, atol=0)
        assert out.logits.shape == (2, 100) and not out.logits.any()


def test_supcontrast_ce_baseline_has_fc_in_same_file(tmp_path):
    torch.manual_seed(2)
    net = SupCENet("resnet18", num_classes=7)
    randomize_bn(net, seed=3)
    _save_supcontrast(net, tmp_path / "ce.pth")
    # format, arch and stem all detected
    imp = import_teacher(tmp_path / "ce.pth", input_norm="none")
    assert (imp.format, imp.arch, imp.num_classes, imp.has_head) == (
        "supcontrast",
        "resnet18",
        7,
        False,
    )
    x = _batch(n=2)
    with torch.no_grad():
        torch.testing.assert_close(imp.model(x).logits, net.eval()(x), rtol=0, atol=0)


def test_torchvision_weights_reproduce_logits(tmp_path):
    # the Bottleneck path of the shared loader is covered by the ResNet-50 SupContrast test
    arch = "resnet18"
    torch.manual_seed(3)
    tv = getattr(torchvision.models, arch)(weights=None, num_classes=5)
    randomize_bn(tv, seed=4)
    # as some published ImageNet weights: no BatchNorm num_batches_tracked buffers
    sd = {k: v for k, v in tv.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, tmp_path / "tv.pth")
    imp = import_teacher(tmp_path / "tv.pth", arch=arch, fmt="torchvision")
    assert (imp.stem, imp.num_classes) == ("imagenet", 5)
    # ImageNet statistics on supkd's imagefolder (the same): no input correction
    assert (imp.data, imp.input_affine) == ("imagefolder", None)
    x = _batch(size=64, n=2)
    with torch.no_grad():
        torch.testing.assert_close(imp.model(x).logits, tv.eval()(x), rtol=0, atol=0)


def test_strip_module_prefix_anywhere_in_key():
    sd = {"encoder.module.conv1.weight": torch.zeros(1), "module.head.0.bias": torch.ones(1)}
    assert sorted(strip_module_prefix(sd)) == ["encoder.conv1.weight", "head.0.bias"]


# ---- through the CLI: a run directory that the engine loads -----------------------------


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_cli_writes_a_loadable_run_directory_and_reimports_it(supcon18, tmp_path, capsys):
    from supkd.train.checkpoint import load_model

    net, cls, d = supcon18
    out = tmp_path / "teacher"
    code, _, err = _cli(
        capsys,
        "import-teacher",
        str(d / "ckpt.pth"),
        "--classifier",
        str(d / "cls.pth"),
        "--arch",
        "resnet18",
        "--input-norm",
        "none",
        "--out",
        str(out),
    )
    assert code == 0, err
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "imported"
    assert result["meta"]["imported"]["format"] == "supcontrast"
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["model"]["name"] == "resnet18" and cfg["model"]["projection_dim"] == 32
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "scratch files left behind"
    x = _batch()
    teacher = load_model(out).eval()
    with torch.no_grad():
        torch.testing.assert_close(teacher(x).logits, cls(net.encoder(x)), rtol=0, atol=0)
        torch.testing.assert_close(teacher(x).projection, net(x), rtol=0, atol=0)

    # (c) a supkd run directory as the source
    again = tmp_path / "teacher2"
    code, _, err = _cli(capsys, "import-teacher", str(out), "--out", str(again))
    assert code == 0, err
    with torch.no_grad():
        torch.testing.assert_close(load_model(again)(x).logits, teacher(x).logits, rtol=0, atol=0)

    # an existing run is not overwritten by accident
    code, _, err = _cli(capsys, "import-teacher", str(out), "--out", str(again))
    assert code == 2 and "--force" in err


# ---- bad inputs: exit 2, one line naming the file, no traceback -------------------------


def _expect_user_error(capsys, argv: list[str], *needles: str) -> str:
    code, _, err = _cli(capsys, "import-teacher", *argv)
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def test_wrong_arch_is_reported_with_both_names(supcon18, tmp_path, capsys):
    _, _, d = supcon18
    _expect_user_error(
        capsys,
        [
            str(d / "ckpt.pth"),
            "--arch",
            "resnet50",
            "--classifier",
            str(d / "cls.pth"),
            "--out",
            str(tmp_path / "o"),
        ],
        "ckpt.pth",
        "resnet18",
        "resnet50",
    )
    assert not (tmp_path / "o" / "model.pt").exists()


def test_wrong_stem_is_reported(supcon18, tmp_path, capsys):
    _, _, d = supcon18
    _expect_user_error(
        capsys,
        [
            str(d / "ckpt.pth"),
            "--stem",
            "imagenet",
            "--num-classes",
            "10",
            "--out",
            str(tmp_path / "o"),
        ],
        "ckpt.pth",
        "cifar",
        "imagenet",
    )


@pytest.mark.parametrize("keep", [0, 100, 0.5, -3])
def test_truncated_or_empty_checkpoint(supcon18, tmp_path, capsys, keep):
    _, _, d = supcon18
    data = (d / "ckpt.pth").read_bytes()
    n = (
        int(len(data) * keep)
        if isinstance(keep, float)
        else (keep if keep >= 0 else len(data) + keep)
    )
    bad = tmp_path / "cut.pth"
    bad.write_bytes(data[:n])
    line = _expect_user_error(
        capsys, [str(bad), "--num-classes", "10", "--out", str(tmp_path / "o")], "cut.pth"
    )
    assert ("empty" in line) if n == 0 else ("truncated" in line or "corrupt" in line)


def test_missing_keys_are_listed(supcon18, tmp_path, capsys):
    net, _, _ = supcon18
    gone = ("encoder.layer3.1.bn2.running_var", "encoder.layer2.0.shortcut.0.weight")
    sd = {k: v for k, v in net.state_dict().items() if k not in gone}
    torch.save({"model": sd}, tmp_path / "holes.pth")
    _expect_user_error(
        capsys,
        [str(tmp_path / "holes.pth"), "--num-classes", "10", "--out", str(tmp_path / "o")],
        "holes.pth",
        "missing",
        "layer3.1.",
    )


def test_missing_head_layer(supcon18, tmp_path, capsys):
    net, _, _ = supcon18
    sd = {k: v for k, v in net.state_dict().items() if k != "head.2.bias"}
    torch.save({"model": sd}, tmp_path / "nohead.pth")
    _expect_user_error(
        capsys,
        [str(tmp_path / "nohead.pth"), "--num-classes", "10", "--out", str(tmp_path / "o")],
        "nohead.pth",
        "head.2.bias",
    )


def test_classifier_of_other_width(supcon18, tmp_path, capsys):
    _, _, d = supcon18
    torch.save({"model": LinearClassifierNet(2048, 10).state_dict()}, tmp_path / "cls50.pth")
    _expect_user_error(
        capsys,
        [
            str(d / "ckpt.pth"),
            "--classifier",
            str(tmp_path / "cls50.pth"),
            "--out",
            str(tmp_path / "o"),
        ],
        "cls50.pth",
        "512",
    )


def test_no_classifier_and_no_num_classes(supcon18, tmp_path, capsys):
    _, _, d = supcon18
    _expect_user_error(
        capsys, [str(d / "ckpt.pth"), "--out", str(tmp_path / "o")], "--classifier", "--num-classes"
    )


def test_not_a_checkpoint_and_not_found(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("this is not a checkpoint\n")
    _expect_user_error(
        capsys, [str(tmp_path / "notes.txt"), "--out", str(tmp_path / "o")], "notes.txt"
    )
    _expect_user_error(
        capsys, [str(tmp_path / "nope.pth"), "--out", str(tmp_path / "o")], "nope.pth"
    )


def test_unrecognized_keys_need_a_format(tmp_path, capsys):
    torch.save({"model": {"backbone.stem.weight": torch.zeros(3)}}, tmp_path / "other.pth")
    _expect_user_error(
        capsys, [str(tmp_path / "other.pth"), "--out", str(tmp_path / "o")], "other.pth", "--format"
    )


def test_api_raises_checkpoint_error(supcon18):
    _, _, d = supcon18
    with pytest.raises(CheckpointError, match="resnet34"):
        import_teacher(d / "ckpt.pth", arch="resnet34", num_classes=10)


def test_imported_teacher_drives_a_distill_run(tmp_path, capsys):
    """End to end: a SupContrast CE-baseline checkpoint (1 input channel, 10 classes, as the
    digits data) -> import-teacher -> ``supkd train`` distills a student from it."""
    import torch.nn as nn
    from supcontrast_reference import Encoder

    torch.manual_seed(5)
    net = SupCENet("resnet18", num_classes=10)
    net.encoder = Encoder("resnet18", in_channels=1)
    net.fc = nn.Linear(512, 10)
    _save_supcontrast(net, tmp_path / "ce.pth")
    teacher = tmp_path / "teacher"
    # digits has no fixed statistics to convert into: the teacher is taken as it is
    argv = ["import-teacher", str(tmp_path / "ce.pth"), "--input-norm", "none"]
    assert main([*argv, "--out", str(teacher)]) == 0
    cfg = {
        "device": "cpu",
        "data": {"name": "digits", "subset": 32, "num_workers": 0},
        "model": {"name": "resnet18", "width": 4},
        "task": {
            "name": "distill",
            "teacher": str(teacher),
            "loss": "logit_mse",
            "teacher_cache": "off",
        },
        "train": {"epochs": 1, "batch_size": 16, "steps_per_epoch": 1, "progress": False},
    }
    (tmp_path / "kd.yaml").write_text(yaml.safe_dump(cfg))
    code = main(["train", str(tmp_path / "kd.yaml"), "--out", str(tmp_path / "kd"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert json.loads((tmp_path / "kd" / "result.json").read_text())["status"] == "completed"
