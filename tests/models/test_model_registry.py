"""The model registry: exact names, families (``prefix/<name>``), errors, model files."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from supkd.models import (
    MODEL_FAMILIES,
    MODELS,
    ModelOutput,
    create_model,
    list_model_families,
    list_models,
    load_model,
    register_model,
    register_model_family,
    save_model,
)
from supkd.models.resnet import ARCHS, SupKDResNet, build_resnet
from supkd.models.zoo import zoo_names


class TinyNet(nn.Module):
    """A user's model: one linear layer over the flattened image."""

    def __init__(self, name: str, num_classes: int, in_channels: int, size: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_channels * size * size, num_classes)
        self.spec = {"name": name, "num_classes": num_classes, "in_channels": in_channels,
                     "size": size}

    def forward(self, x: torch.Tensor) -> ModelOutput:
        flat = x.flatten(1)
        return ModelOutput(self.fc(flat), flat, None)


@pytest.fixture
def throwaway():
    """Forget what a test registered."""
    added: list[tuple[object, str]] = []
    yield added
    for registry, name in added:
        registry.remove(name)  # type: ignore[attr-defined]


def test_the_resnets_are_registered_by_their_file():
    assert sorted(ARCHS) == ["resnet18", "resnet34", "resnet50"]
    assert list_models() == sorted([*ARCHS, *zoo_names()])  # and the KD zoo's, by theirs
    assert set(MODELS) == set(ARCHS) | set(zoo_names())
    assert all(MODELS[name] is build_resnet for name in ARCHS)
    assert list_model_families() == [f"{p}/<name>" for p in sorted(MODEL_FAMILIES)]
    net = create_model("resnet34", stem="imagenet", num_classes=5, width=4)
    assert isinstance(net, SupKDResNet) and net.spec["name"] == "resnet34"
    assert net.spec["stem"] == "imagenet" and net.classifier.out_features == 5


@pytest.mark.parametrize(
    ("name", "close"),
    [("resnet19", "resnet18"), ("Resnet34", "resnet34"), ("resnet", None), (None, None)],
)
def test_unknown_names_list_the_valid_ones_and_the_closest(name, close):
    with pytest.raises(ValueError) as err:
        create_model(name)
    text = str(err.value)
    assert text.startswith(f"unknown model {name!r}; valid models: {', '.join(list_models())}")
    if close is not None:
        assert text.endswith(f"(did you mean '{close}'?)")


def test_a_users_model_builds_saves_and_loads(tmp_path, throwaway):
    @register_model("tiny_net")
    def build_tiny(name, num_classes=10, in_channels=3, size=8):
        return TinyNet(name, num_classes, in_channels, size)

    throwaway.append((MODELS, "tiny_net"))
    assert "tiny_net" in list_models()
    net = create_model("tiny_net", num_classes=4, in_channels=1, size=6)
    assert isinstance(net, TinyNet) and net.fc.weight.shape == (4, 36)
    save_model(tmp_path / "model.pt", net, {"task": "ce"})
    back = load_model(tmp_path / "model.pt")
    assert isinstance(back, TinyNet) and back.spec == net.spec
    assert torch.equal(back.fc.weight, net.fc.weight)
    with pytest.raises(TypeError):
        create_model("tiny_net", stem="cifar")  # an argument its builder does not take
    with pytest.raises(ValueError, match=r"'tiny_net' is already registered \(by .*build_tiny"):
        register_model("tiny_net")(build_tiny)


def test_a_family_builds_every_member_by_prefix(throwaway):
    seen: list[str] = []

    @register_model_family("toyzoo")
    def build_zoo(name, num_classes=10):
        seen.append(name)
        member = name.split("/", 1)[1]
        return TinyNet(name, num_classes, 3, {"small": 4, "large": 8}[member])

    throwaway.append((MODEL_FAMILIES, "toyzoo"))
    assert "toyzoo/<name>" in list_model_families()
    assert create_model("toyzoo/large", num_classes=3).fc.weight.shape == (3, 3 * 8 * 8)
    assert seen == ["toyzoo/large"]
    assert "toyzoo/large" not in list_models()  # members are not listed, only the family
    for bad in ("toyzoo", "toyzoo/", "toyzo/large"):
        with pytest.raises(ValueError, match=r"families: .*toyzoo/<name>"):
            create_model(bad)


@pytest.mark.parametrize("bad", ["timm/vit", "", None])
def test_bad_registrations_are_refused(bad):
    with pytest.raises(ValueError):
        register_model(bad)(build_resnet)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        register_model_family(bad if bad != "timm/vit" else "a/b")(build_resnet)  # type: ignore[arg-type]
    assert set(MODELS) == set(ARCHS) | set(zoo_names()) and "a/b" not in MODEL_FAMILIES
