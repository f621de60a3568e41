"""The KD benchmark's model zoo: exact parameter counts, rebuild from spec, stages,
pre-activations and the BatchNorms before the ReLUs, against closed forms."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from supkd.models import create_model, list_models
from supkd.models.zoo import PUBLISHED_PARAMS, ZOO_CLASSES, ZooModel, zoo_names

# The counts of issue 21, measured with torch from mdistiller's code (written out here, not
# read from the package, so that a changed table in the package cannot pass this test).
EXPECTED = {
    "resnet8": 83892, "resnet14": 181108, "resnet20": 278324, "resnet32": 472756,
    "resnet44": 667188, "resnet56": 861620, "resnet110": 1736564, "resnet8x4": 1233540,
    "resnet32x4": 7433860, "ResNet50": 23705252, "ResNet18": 11220132,
    "wrn_16_1": 180916, "wrn_16_2": 703284, "wrn_40_1": 569780, "wrn_40_2": 2255156,
    "vgg8": 3965028, "vgg11": 9277284, "vgg13": 9462180, "vgg16": 14774436,
    "vgg19": 20086692, "MobileNetV2": 812836, "ShuffleV1": 949258, "ShuffleV2": 1355528,
}
ALIASES = ("ResNet18", "ResNet50")  # supkd's ResNets (their preact belongs to resnet.py)
OWN = [n for n in EXPECTED if n not in ALIASES] + ["MobileNetV1"]
SMALL = ["resnet8", "resnet8x4", "wrn_16_1", "wrn_16_2", "vgg8", "MobileNetV2", "ShuffleV1",
         "ShuffleV2", "MobileNetV1"]


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_the_zoo_is_the_24_names_all_registered():
    assert sorted(zoo_names()) == sorted([*EXPECTED, "MobileNetV1"])
    assert set(zoo_names()) <= set(list_models())
    assert PUBLISHED_PARAMS == {**EXPECTED, "MobileNetV1": 4231976}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_parameter_count_at_100_classes(name):
    assert n_params(create_model(name, num_classes=100)) == EXPECTED[name]


def test_mobilenetv1_count_at_1000_classes():
    assert n_params(create_model("MobileNetV1", num_classes=1000)) == 4231976
    assert ZOO_CLASSES["MobileNetV1"] == 1000


def test_projection_head_is_extra_and_classifier_is_their_linear():
    plain = create_model("resnet8x4", num_classes=100)
    head = create_model("resnet8x4", num_classes=100, projection_dim=32)
    d = plain.embedding_dim
    assert n_params(head) - n_params(plain) == (d * d + d) + (d * 32 + 32)
    assert tuple(plain.classifier.weight.shape) == (100, 256)


@pytest.mark.parametrize("name", SMALL + list(ALIASES))
def test_spec_rebuilds_the_same_network(name):
    torch.manual_seed(0)
    net = create_model(name, num_classes=7, projection_dim=16, in_channels=1,
                       input_affine={"scale": [2.0], "shift": [0.5]})
    again = create_model(**net.spec)
    again.load_state_dict(net.state_dict())
    x = torch.randn(2, 1, 16, 16)
    net.eval()
    again.eval()
    with torch.no_grad():
        a, b = net(x), again(x)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.projection, b.projection)
    assert a.logits.shape == (2, 7) and a.projection.shape == (2, 16)
    assert torch.allclose(a.projection.norm(dim=1), torch.ones(2), atol=1e-6)


@pytest.mark.parametrize("name", SMALL)
def test_input_affine_is_applied_first(name):
    """x * scale + shift before the stem: same logits as the plain network on the mapped x."""
    torch.manual_seed(0)
    scale, shift = [0.5, 2.0, 1.5], [0.1, -0.3, 0.0]
    net = create_model(name, num_classes=5, input_affine={"scale": scale, "shift": shift})
    plain = create_model(name, num_classes=5)
    plain.load_state_dict(net.state_dict())
    x = torch.randn(2, 3, 32, 32)
    mapped = x * torch.tensor(scale).view(1, 3, 1, 1) + torch.tensor(shift).view(1, 3, 1, 1)
    net.eval()
    plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x).logits, plain(mapped).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", SMALL)
def test_intermediates_agree_with_forward(name):
    torch.manual_seed(0)
    net = create_model(name, num_classes=10).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        out = net(x)
        feats = net.forward_intermediates(x)
    keys = list(feats)
    assert keys[0] == "stem" and keys[-2:] == ["embedding", "logits"]
    assert keys[1:-2] == [f"layer{i}" for i in range(1, len(keys) - 2)]
    torch.testing.assert_close(feats["logits"], out.logits)
    torch.testing.assert_close(feats["embedding"], out.embedding)
    assert feats["embedding"].shape == (3, net.embedding_dim)


def _eval_with_stats(net: torch.nn.Module) -> torch.nn.Module:
    """Random BatchNorm statistics and affine parameters, so that a BN mix-up shows."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
    return net.eval()


# Stages that end in a ReLU: the output is relu(pre-activation). Where none ends the stage,
# (WRN's pre-activation blocks, MobileNetV2's linear bottlenecks) see the tests below.
RELU_ENDED = {n: None for n in OWN}
RELU_ENDED.update({n: ["stem"] for n in ("MobileNetV2",)})
RELU_ENDED.update({n: [] for n in ("wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2")})


@pytest.mark.parametrize("name", SMALL)
def test_preact_is_the_input_of_the_stage_relu(name):
    torch.manual_seed(0)
    net = _eval_with_stats(create_model(name, num_classes=10))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        post = net.forward_intermediates(x)
        pre = net.forward_intermediates(x, preact=True)
    assert list(pre) == list(post)
    torch.testing.assert_close(pre["logits"], post["logits"])
    stages = [k for k in post if k not in ("embedding", "logits")]
    relu_ended = RELU_ENDED[name] if RELU_ENDED[name] is not None else stages
    for s in stages:
        if s in relu_ended:
            if name == "ShuffleV2" and s != "stem":
                # mdistiller's ShuffleV2 pre-activation is taken before the channel shuffle
                c = pre[s].shape[1]
                shuffled = pre[s].reshape(2, 2, c // 2, *pre[s].shape[2:]).transpose(1, 2)
                torch.testing.assert_close(F.relu(shuffled.reshape(pre[s].shape)), post[s])
            else:
                torch.testing.assert_close(F.relu(pre[s]), post[s])
                assert (pre[s] < 0).any()  # a real pre-activation, not the output again
        elif name == "MobileNetV2":
            torch.testing.assert_close(pre[s], post[s])  # linear bottleneck: no final ReLU


@pytest.mark.parametrize("name", ["wrn_16_2", "wrn_40_1"])
def test_wrn_preact_is_the_next_batchnorm(name):
    net = _eval_with_stats(create_model(name, num_classes=10))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        post = net.forward_intermediates(x)
        pre = net.forward_intermediates(x, preact=True)
        bns = net.bn_before_relu()
        for s, bn in bns.items():
            torch.testing.assert_close(pre[s], bn(post[s]))
    assert bns["layer1"] is net.encoder.block2.layer[0].bn1
    assert bns["layer3"] is net.encoder.bn1


def test_wrn_preact_in_training_leaves_running_statistics_alone():
    torch.manual_seed(0)
    net = create_model("wrn_16_1", num_classes=10).train()
    x = torch.randn(4, 3, 32, 32)
    a = create_model("wrn_16_1", num_classes=10).train()
    a.load_state_dict(net.state_dict())
    net.forward_intermediates(x, preact=True)
    a.forward_intermediates(x)
    for (k, v), w in zip(net.state_dict().items(), a.state_dict().values()):
        assert torch.equal(v, w), k
    # and in training the pre-activation uses the batch's statistics, as the next block does
    net2 = create_model("wrn_16_1", num_classes=10).train()
    feats = net2.forward_intermediates(x, preact=True)
    post = net2.forward_intermediates(x)
    bn = net2.encoder.bn1
    m = post["layer3"].mean(dim=(0, 2, 3), keepdim=True)
    v = post["layer3"].var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    ref = (post["layer3"] - m) / torch.sqrt(v + bn.eps) * bn.weight.view(1, -1, 1, 1) \
        + bn.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(feats["layer3"], ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["resnet8", "resnet8x4", "vgg8", "MobileNetV2", "MobileNetV1"])
def test_bn_before_relu_names_one_batchnorm_per_stage(name):
    """Each stage's BatchNorm: the stem's (and VGG's, MobileNetV1's) output is exactly the
    pre-activation; ResNets and MobileNetV2 name the last block's last BN (mdistiller's)."""
    net = _eval_with_stats(create_model(name, num_classes=10))
    bns = net.bn_before_relu()
    x = torch.randn(2, 3, 32, 32)
    seen: dict[str, torch.Tensor] = {}
    hooks = [bn.register_forward_hook(lambda m, i, o, s=s: seen.__setitem__(s, o))
             for s, bn in bns.items()]
    with torch.no_grad():
        pre = net.forward_intermediates(x, preact=True)
    for h in hooks:
        h.remove()
    assert list(bns) == [k for k in pre if k not in ("embedding", "logits")]
    assert all(isinstance(b, torch.nn.BatchNorm2d) for b in bns.values())
    exact = list(bns) if name in ("vgg8", "MobileNetV1") else ["stem"]
    for s in exact:
        torch.testing.assert_close(seen[s], pre[s])
    if name.startswith("resnet"):
        assert bns["layer3"] is net.encoder.layer3[-1].bn2
    if name == "MobileNetV2":
        assert bns["layer4"] is net.encoder.blocks[6][-1].conv[7]


@pytest.mark.parametrize("name", ["ShuffleV1", "ShuffleV2"])
def test_shufflenets_have_no_bn_before_relu(name):
    with pytest.raises(ValueError, match=name):
        create_model(name, num_classes=10).bn_before_relu()


@pytest.mark.parametrize("name", SMALL)
def test_small_inputs_run(name):
    """The 8x8 digits (one channel): every stage keeps at least 1x1."""
    net = create_model(name, num_classes=10, in_channels=1).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 1, 8, 8))
    assert out.logits.shape == (2, 10) and torch.isfinite(out.logits).all()


def test_vgg_pools_before_its_last_block_only_at_64_pixels():
    net = create_model("vgg8", num_classes=10).eval()
    with torch.no_grad():
        f32 = net.forward_intermediates(torch.randn(1, 3, 32, 32))
        f64 = net.forward_intermediates(torch.randn(1, 3, 64, 64))
    assert f32["layer3"].shape[-1] == f32["layer4"].shape[-1] == 4
    assert f64["layer3"].shape[-1] == 8 and f64["layer4"].shape[-1] == 4


def test_zoo_models_are_zoo_models_except_the_resnet_aliases():
    assert isinstance(create_model("resnet8"), ZooModel)
    alias = create_model("ResNet18", num_classes=100)
    assert alias.spec["name"] == "ResNet18" and "stem" not in alias.spec
    ref = create_model("resnet18", stem="cifar", num_classes=100)
    assert [tuple(v.shape) for v in alias.state_dict().values()] == \
        [tuple(v.shape) for v in ref.state_dict().values()]


@pytest.mark.parametrize("kwargs, match", [
    ({"num_classes": 0}, "num_classes"),
    ({"num_classes": 10, "projection_dim": -1}, "projection_dim"),
    ({"num_classes": 10, "in_channels": 0}, "in_channels"),
    ({"num_classes": 10, "projection_head": "deep", "projection_dim": 8}, "projection_head"),
    ({"num_classes": 10, "input_affine": {"scale": [1.0], "shift": [0.0]}}, "input_affine"),
])
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_model("resnet8", **kwargs)


def test_unknown_stem_or_width_is_refused():
    with pytest.raises(TypeError):
        create_model("resnet8", num_classes=10, width=8)


def test_supkd_models_lists_the_zoo_with_counts(capsys):
    import json

    from supkd.cli import main

    assert main(["models", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    counts = {r["name"]: (r["params"], r["classes"]) for r in out["zoo"]}
    assert counts == {**{n: (c, 100) for n, c in EXPECTED.items()},
                      "MobileNetV1": (4231976, 1000)}
    assert "resnet18" in out["other_models"] and "timm/<name>" in out["families"]
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    assert any(line.split()[:3] == ["resnet32x4", "7,433,860", "100"] for line in text.splitlines())
    assert main(["models", "--classes", "0"]) == 2
    assert "--classes" in capsys.readouterr().err
