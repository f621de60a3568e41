"""Models: parameter counts, shapes, gradients, intermediates, heads, freezing, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from supkd.models import (
    ModelOutput,
    ProjectionHead,
    SupKDResNet,
    as_model_output,
    create_model,
    list_models,
)


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize(
    ("name", "stem", "classes", "expected"),
    [
        ("resnet18", "cifar", 10, 11_173_962),
        ("resnet50", "cifar", 10, 23_520_842),
        ("resnet34", "imagenet", 1000, 21_797_672),
        ("resnet50", "imagenet", 1000, 25_557_032),
    ],
)
def test_parameter_counts(name: str, stem: str, classes: int, expected: int) -> None:
    # Built on the meta device: shapes only, no initialization cost.
    with torch.device("meta"):
        net = create_model(name, stem=stem, num_classes=classes)
    assert n_params(net) == expected


def test_imagenet_counts_match_torchvision() -> None:
    import torchvision

    with torch.device("meta"):
        for name in ("resnet18", "resnet34", "resnet50"):  # the zoo's are counted in test_zoo
            tv = getattr(torchvision.models, name)()
            assert n_params(create_model(name, stem="imagenet", num_classes=1000)) == n_params(tv)


def test_list_models_and_unknown_name() -> None:
    assert {"resnet18", "resnet34", "resnet50"} <= set(list_models())
    with pytest.raises(ValueError, match=r"valid models: .*resnet18, resnet20, .*resnet34, "):
        create_model("resnet101")
    with pytest.raises(ValueError, match="stem"):
        create_model("resnet18", stem="tiny")
    for bad in ({"num_classes": 0}, {"width": 0}, {"projection_dim": -3}):
        with pytest.raises(ValueError):
            create_model("resnet18", **bad)


# Narrow networks keep the shape/gradient checks fast on CPU; the wiring is the same.
CASES = [
    (name, stem, 16)
    for name in ("resnet18", "resnet34", "resnet50")
    for stem in ("cifar", "imagenet")
] + [("resnet18", "cifar", None)]


@pytest.mark.parametrize(("name", "stem", "proj"), CASES)
def test_forward_shapes_no_nan_and_all_grads(name: str, stem: str, proj: int | None) -> None:
    torch.manual_seed(0)
    width = 4
    net = create_model(name, stem=stem, num_classes=7, projection_dim=proj, width=width)
    size = 8 if stem == "cifar" else 32
    x = torch.randn(3, 3, size, size)
    out = net(x)
    assert isinstance(out, ModelOutput)
    feat = width * 8 * (4 if name == "resnet50" else 1)
    assert net.embedding_dim == feat
    assert out.logits.shape == (3, 7)
    assert out.embedding.shape == (3, feat)
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.embedding).all()
    if proj is None:
        assert out.projection is None and net.head is None
        loss = out.logits.square().mean()
    else:
        assert out.projection.shape == (3, proj)
        torch.testing.assert_close(out.projection.norm(dim=1), torch.ones(3))
        loss = out.logits.square().mean() + out.projection[:, 0].sum()
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


@pytest.mark.parametrize(
    ("stem", "size", "spatial"),
    [("cifar", 32, (32, 32, 16, 8, 4)), ("imagenet", 64, (16, 16, 8, 4, 2))],
)
def test_forward_intermediates(stem: str, size: int, spatial: tuple[int, ...]) -> None:
    net = create_model("resnet18", stem=stem, num_classes=5, width=8).eval()
    x = torch.randn(2, 3, size, size)
    feats = net.forward_intermediates(x)
    assert list(feats) == ["stem", "layer1", "layer2", "layer3", "layer4", "embedding", "logits"]
    channels = (8, 8, 16, 32, 64)
    for key, c, s in zip(["stem", "layer1", "layer2", "layer3", "layer4"], channels, spatial):
        assert feats[key].shape == (2, c, s, s), key
    out = net(x)
    torch.testing.assert_close(feats["embedding"], out.embedding)
    torch.testing.assert_close(feats["logits"], out.logits)
    # The embedding is the global average of layer4 (He et al., 2016).
    torch.testing.assert_close(feats["embedding"], feats["layer4"].mean(dim=(2, 3)))


def test_in_channels_and_spec_roundtrip() -> None:
    net = create_model("resnet18", num_classes=10, width=8, in_channels=1, projection_dim=4)
    assert net(torch.randn(2, 1, 16, 16)).logits.shape == (2, 10)
    again = create_model(**net.spec)
    assert isinstance(again, SupKDResNet)
    again.load_state_dict(net.state_dict())  # same architecture: loads strictly
    assert again.spec == net.spec


def test_projection_head_matches_formula() -> None:
    torch.manual_seed(0)
    head = ProjectionHead(6, 3)
    h = torch.randn(5, 6)
    ref = head.fc2(torch.relu(head.fc1(h)))
    ref = ref / ref.norm(dim=1, keepdim=True)
    torch.testing.assert_close(head(h), ref)
    assert torch.isfinite(head(torch.zeros(2, 6))).all()
    with pytest.raises(ValueError):
        ProjectionHead(0, 3)


def test_freeze_encoder_for_linear_stage() -> None:
    torch.manual_seed(0)
    net = create_model("resnet18", num_classes=3, width=4, projection_dim=8)
    net.freeze_encoder()
    net.train()
    assert not net.encoder.training and net.classifier.training
    before = net.encoder.bn1.running_mean.clone()
    out = net(torch.randn(4, 3, 16, 16))
    F.cross_entropy(out.logits, torch.tensor([0, 1, 2, 0])).backward()
    assert all(p.grad is None for p in net.encoder.parameters())
    assert net.classifier.weight.grad is not None
    # BatchNorm statistics are not updated by a forward pass while frozen.
    torch.testing.assert_close(net.encoder.bn1.running_mean, before)
    net.freeze_encoder(False)
    net.train()
    assert net.encoder.training and all(p.requires_grad for p in net.encoder.parameters())


def test_as_model_output() -> None:
    logits = torch.randn(4, 3)
    out = as_model_output(logits)
    assert out.logits is logits and out.embedding is logits and out.projection is None
    mo = ModelOutput(logits, torch.randn(4, 8), None)
    assert as_model_output(mo) is mo
    emb = torch.randn(4, 8)
    assert as_model_output((logits, emb)).embedding is emb
    with pytest.raises(ValueError):
        as_model_output(torch.randn(4))
    with pytest.raises(ValueError):
        as_model_output("nope")  # type: ignore[arg-type]
