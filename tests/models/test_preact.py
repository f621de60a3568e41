"""Pre-activation stage outputs (``forward_intermediates(x, preact=True)``) and
``bn_before_relu()`` of supkd's ResNets, and the one-line refusal of timm models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from supkd.models import create_model

STAGES = ["stem", "layer1", "layer2", "layer3", "layer4"]


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
@pytest.mark.parametrize("stem", ["cifar", "imagenet"])
def test_relu_of_the_preact_stages_is_the_stage_output_bit_for_bit(name, stem):
    torch.manual_seed(0)
    net = create_model(name, stem=stem, width=4, num_classes=5).eval()
    x = torch.randn(2, 3, 32, 32)
    post = net.forward_intermediates(x)
    pre = net.forward_intermediates(x, preact=True)
    assert list(pre) == list(post)  # same keys, same order
    for k in STAGES:
        assert torch.equal(torch.relu(pre[k]), post[k]), k
        if not (stem == "imagenet" and k == "stem"):  # a 3x3 max-pool is rarely negative
            assert (pre[k] < 0).any(), k  # really before the ReLU
    assert torch.equal(pre["logits"], post["logits"])
    assert torch.equal(pre["embedding"], net(x).embedding)


def test_preact_is_a_bn_output_plus_the_shortcut():
    torch.manual_seed(1)
    net = create_model("resnet18", width=4).eval()
    x = torch.randn(2, 3, 8, 8)
    post = net.forward_intermediates(x)
    pre = net.forward_intermediates(x, preact=True)
    last = net.encoder.layer2[-1]
    inp = net.encoder.layer2[0](post["layer1"])  # input of layer2's last block
    branch = last.bn2(last.conv2(last.relu(last.bn1(last.conv1(inp)))))
    assert torch.allclose(pre["layer2"], branch + inp, atol=1e-6)
    assert net.bn_before_relu()["layer2"] is last.bn2
    # The stem's pre-activation is bn1's output.
    assert torch.allclose(pre["stem"], net.encoder.bn1(net.encoder.conv1(x)))


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_bn_before_relu_names_every_conv_stage(name):
    net = create_model(name, width=4)
    bns = net.bn_before_relu()
    assert list(bns) == STAGES
    x = torch.randn(2, 3, 8, 8)
    pre = net.eval().forward_intermediates(x, preact=True)
    for k, bn in bns.items():
        assert isinstance(bn, nn.BatchNorm2d) and bn.num_features == pre[k].shape[1], k
    assert bns["stem"] is net.encoder.bn1
    block = net.encoder.layer4[-1]
    assert bns["layer4"] is (block.bn3 if name == "resnet50" else block.bn2)


@pytest.mark.parametrize("arch", ["timm/resnet10t", "timm/resnet26"])
def test_timm_resnets_give_preact_stages_through_their_relu_inputs(arch):
    pytest.importorskip("timm")
    torch.manual_seed(2)
    net = create_model(arch, num_classes=3).eval()
    with torch.no_grad():  # timm zero-inits each block's last BN: give the branches weight
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.normal_()
    x = torch.randn(2, 3, 32, 32)
    post = net.forward_intermediates(x)
    pre = net.forward_intermediates(x, preact=True)
    assert list(pre) == list(post)
    stages = [k for k in post if k not in ("embedding", "logits")]
    for k in stages:
        assert torch.equal(torch.relu(pre[k]), post[k]), k
        assert (pre[k] < 0).any(), k
    assert torch.equal(pre["logits"], post["logits"])
    bns = net.bn_before_relu()
    assert list(bns) == stages
    assert bns["act1"] is net.encoder.net.bn1
    assert all(bns[k].num_features == pre[k].shape[1] for k in stages)
    # The hooks are gone: a later plain call is unchanged.
    assert torch.equal(net.forward_intermediates(x)["layer2"], post["layer2"])


def test_other_timm_models_refuse_preact_in_one_line():
    pytest.importorskip("timm")
    net = create_model("timm/convnext_atto", num_classes=3).eval()
    x = torch.randn(1, 3, 32, 32)
    assert "logits" in net.forward_intermediates(x)
    with pytest.raises(ValueError, match=r"timm/convnext_atto: stage 'stages.0' has no "
                                         r"pre-activation") as err:
        net.forward_intermediates(x, preact=True)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="no pre-activation"):
        net.bn_before_relu()
