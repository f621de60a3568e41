"""Loading torchvision-format state dicts into the ImageNet-stem ResNets."""

from __future__ import annotations

import pytest
import torch
import torchvision

from supkd.errors import CheckpointError
from supkd.models import create_model, load_torchvision_state_dict, to_torchvision_state_dict


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_torchvision_weights_give_torchvision_outputs(name: str) -> None:
    torch.manual_seed(0)
    tv = getattr(torchvision.models, name)(num_classes=1000).eval()
    # Non-trivial BN statistics, so a wrong mapping of running stats would show.
    for m in tv.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    net = create_model(name, stem="imagenet", num_classes=1000, projection_dim=32).eval()
    load_torchvision_state_dict(net, tv.state_dict())
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(net(x).logits, tv(x))
    back = to_torchvision_state_dict(net)
    assert set(back) == set(tv.state_dict())


def test_ddp_prefix_and_wrapper_accepted() -> None:
    tv = torchvision.models.resnet18()
    sd = {"module." + k: v for k, v in tv.state_dict().items()}
    net = create_model("resnet18", stem="imagenet", num_classes=1000)
    load_torchvision_state_dict(net, {"state_dict": sd})
    torch.testing.assert_close(net.encoder.conv1.weight, tv.conv1.weight)


def test_skip_classifier_for_fewer_classes() -> None:
    tv = torchvision.models.resnet18()
    net = create_model("resnet18", stem="imagenet", num_classes=10)
    head_before = net.classifier.weight.clone()
    load_torchvision_state_dict(net, tv.state_dict(), load_classifier=False)
    torch.testing.assert_close(net.encoder.layer4[1].conv2.weight, tv.layer4[1].conv2.weight)
    torch.testing.assert_close(net.classifier.weight, head_before)


def test_mismatch_lists_keys_and_shapes_and_copies_nothing() -> None:
    tv = torchvision.models.resnet50().state_dict()
    net = create_model("resnet34", stem="imagenet", num_classes=1000)
    before = net.encoder.conv1.weight.clone()
    with pytest.raises(CheckpointError) as err:
        load_torchvision_state_dict(net, tv)
    msg = str(err.value)
    assert "\n" not in msg
    assert "unexpected" in msg and "layer1.0.conv3.weight" in msg
    assert (
        "shape mismatch" in msg
        and "layer1.0.conv1.weight (checkpoint (64, 64, 1, 1), model (64, 64, 3, 3))" in msg
    )
    torch.testing.assert_close(net.encoder.conv1.weight, before)


def test_missing_keys_and_wrong_classes_reported() -> None:
    sd = torchvision.models.resnet18().state_dict()
    del sd["layer2.0.bn1.weight"]
    net = create_model("resnet18", stem="imagenet", num_classes=10)
    with pytest.raises(CheckpointError, match=r"missing 1: layer2\.0\.bn1\.weight.*fc\.weight"):
        load_torchvision_state_dict(net, sd)
    # A CIFAR stem (3x3 conv1) does not take ImageNet weights.
    with pytest.raises(CheckpointError, match=r"conv1\.weight \(checkpoint \(64, 3, 7, 7\)"):
        load_torchvision_state_dict(
            create_model("resnet18", stem="cifar", num_classes=1000),
            torchvision.models.resnet18().state_dict(),
        )
