"""Every layout the public SupContrast code can save, imported and compared output for output.

The source networks are supcontrast_reference.py's modules, written from the architecture of
that code's ``networks/resnet_big.py``: ``SupConResNet`` with ``head='mlp'`` (``head.0``,
``head.2``) or ``head='linear'`` (``head.weight``, ``head.bias``: today's gap, issue 16),
``SupCEResNet`` (``encoder`` + ``fc`` in one file), and ``LinearClassifier`` (``fc``, saved
alone), for every encoder it defines (resnet18/34/50; resnet101 has no supkd model and is
refused with one line). BatchNorm statistics are randomized, so any tensor mapped to the
wrong place changes an output; the imported model must reproduce every output bit for bit.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest
import torch

from supkd.cli import main
from supkd.errors import CheckpointError
from supkd.importers.supcontrast import import_supcontrast
from supkd.models.files import load_model

sys.path.insert(0, str(Path(__file__).parent))
from supcontrast_reference import (
    DIMS,
    LinearClassifier,
    SupCEResNet,
    SupConResNet,
    randomize_bn,
)

LAYOUTS = ("supcon-mlp", "supcon-linear", "supce")


Net = torch.nn.Module


def _source(arch: str, layout: str, seed: int = 0) -> tuple[Net, Net | None]:
    """(network as the public code builds it, its separately saved LinearClassifier or None)."""
    torch.manual_seed(seed)
    if layout == "supce":
        net: torch.nn.Module = SupCEResNet(arch, num_classes=7)
        cls = None
    else:
        net = SupConResNet(arch, head=layout.split("-")[1], feat_dim=32)
        cls = LinearClassifier(arch, num_classes=7)
    randomize_bn(net, seed=seed + 1)
    return net.eval(), (cls.eval() if cls is not None else None)


def _x(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50"])
def test_every_layout_reproduces_every_output(tmp_path, arch, layout):
    net, cls = _source(arch, layout)
    classifier = None
    if cls is not None:
        classifier = tmp_path / "linear.pth"
        torch.save({"opt": argparse.Namespace(), "model": cls.state_dict()}, classifier)
    # (DataParallel's "module." segments: test_import_teacher.py)
    imp = import_supcontrast("ckpt.pth", arch=arch, classifier=classifier,
                             state=net.state_dict())
    assert (imp.arch, imp.stem, imp.num_classes) == (arch, "cifar", 7)
    assert imp.has_head == (layout != "supce") and imp.has_classifier
    x = _x()
    with torch.no_grad():
        out, feat = imp.model(x), net.encoder(x)
        assert out.embedding.shape == (2, DIMS[arch])
        torch.testing.assert_close(out.embedding, feat, rtol=0, atol=0)
        if layout == "supce":
            assert out.projection is None
            torch.testing.assert_close(out.logits, net(x), rtol=0, atol=0)
        else:
            torch.testing.assert_close(out.projection, net(x), rtol=0, atol=0)
            torch.testing.assert_close(out.logits, cls(feat), rtol=0, atol=0)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_resnet101_has_no_supkd_model_and_is_refused(layout):
    net, _ = _source("resnet101", layout)
    with pytest.raises(CheckpointError) as info:
        import_supcontrast("r101.pth", state=net.state_dict(), num_classes=7)
    msg = str(info.value)
    assert "\n" not in msg and "r101.pth" in msg and "resnet101" in msg


@pytest.mark.parametrize("keys, needle", [
    ({"head.1.weight": (4, 4), "head.1.bias": (4,)}, "Linear layers"),
    ({"head.weight": (4, 512)}, "head.weight"),
    ({"head.0.weight": (512, 512), "head.0.bias": (512,), "head.2.weight": (4, 512),
      "head.2.bias": (4,), "head.extra": (1,)}, "head.extra"),
])
def test_a_head_of_no_supcontrast_layout_is_refused(keys, needle):
    net, _ = _source("resnet18", "supce")
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    state.update({k: torch.zeros(*shape) for k, shape in keys.items()})
    with pytest.raises(CheckpointError) as info:
        import_supcontrast("odd.pth", state=state, num_classes=3)
    assert "\n" not in str(info.value) and needle in str(info.value)


def test_cli_imports_a_linear_head_checkpoint_and_it_round_trips(tmp_path, capsys):
    """``supkd import-teacher`` on a head='linear' file (the ValueError of issue 16): the
    saved model has a one-Linear head, and loading it gives the same projection."""
    net, cls = _source("resnet18", "supcon-linear", seed=3)
    torch.save({"opt": argparse.Namespace(dataset="cifar10"), "model": net.state_dict(),
                "epoch": 10}, tmp_path / "ckpt.pth")
    torch.save({"model": cls.state_dict()}, tmp_path / "linear.pth")
    code = main(["import-teacher", str(tmp_path / "ckpt.pth"), "--classifier",
                 str(tmp_path / "linear.pth"), "--input-norm", "none", "--data", "cifar10",
                 "--out", str(tmp_path / "teacher")])
    assert code == 0, capsys.readouterr().err
    model = load_model(tmp_path / "teacher")
    assert model.spec["projection_head"] == "linear"
    with torch.no_grad():
        torch.testing.assert_close(model(_x()).projection, net(_x()), rtol=0, atol=0)
