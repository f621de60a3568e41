"""The registry, build_loss, the class attributes and the `supkd losses` command."""

from __future__ import annotations

import json

import pytest
import torch

import supkd.losses as losses_pkg
from supkd.cli import main
from supkd.losses import LOSSES, KDLoss, SupConLoss, build_loss, loss_arguments

KD_NAMES = ["logit_mse", "norm_mse", "cosine", "gram", "supcon_kd", "hinton_kl"]


def test_registry_holds_exactly_the_six_kd_losses():
    assert list(LOSSES) == KD_NAMES
    assert SupConLoss not in LOSSES.values()
    assert {"LOSSES", "build_loss", "SupConLoss"} <= set(losses_pkg.__all__)


@pytest.mark.parametrize("name", KD_NAMES)
def test_build_loss_returns_the_registered_class_with_attributes(name):
    loss = build_loss(name)
    assert type(loss) is LOSSES[name]
    assert isinstance(loss, KDLoss) and isinstance(loss, torch.nn.Module)
    cls = LOSSES[name]
    assert isinstance(cls.paper_eq, str) and cls.paper_eq
    assert isinstance(cls.summary, str) and cls.summary
    for attr in ("needs_labels", "compares_samples", "same_width"):
        assert isinstance(getattr(loss, attr), bool), attr


def test_class_attributes_follow_the_contract():
    expected_eq = {
        "logit_mse": "Eq. 1",
        "norm_mse": "Eq. 2",
        "cosine": "Eq. 3",
        "gram": "Eq. 4",
        "supcon_kd": "Eq. 5",
    }
    for name, eq in expected_eq.items():
        assert LOSSES[name].paper_eq == eq
    compares = {n for n in KD_NAMES if build_loss(n).compares_samples}
    assert compares == {"gram", "supcon_kd"}
    labels = {n for n in KD_NAMES if LOSSES[n].needs_labels}
    assert labels == {"supcon_kd"}
    same = {n for n in KD_NAMES if build_loss(n).same_width}
    assert same == {"logit_mse", "norm_mse", "cosine", "supcon_kd", "hinton_kl"}
    assert build_loss("gram", mode="channel").same_width is True


def test_build_loss_passes_arguments_and_defaults():
    kd = build_loss("supcon_kd", temperature=0.5, normalize_student=False, normalize_teacher=True)
    assert (kd.temperature, kd.normalize_student, kd.normalize_teacher) == (0.5, False, True)
    default = build_loss("supcon_kd")
    assert (default.temperature, default.normalize_student, default.normalize_teacher) == (
        0.1,
        True,
        False,
    )
    assert build_loss("hinton_kl").temperature == 4.0
    gram = build_loss("gram")
    assert (gram.normalize, gram.mode) == (False, "sample")
    assert loss_arguments(LOSSES["cosine"]) == {}
    assert loss_arguments(SupConLoss) == {"temperature": 0.1, "base_temperature": None}


def test_supkd_losses_command_lists_every_loss(capsys):
    assert main(["losses"]) == 0
    out = capsys.readouterr().out
    for name in [*KD_NAMES, "SupConLoss"]:
        assert name in out
    for text in ("Eq. 1", "Eq. 5", "temperature=0.1", "normalize_student=True", "mode='sample'"):
        assert text in out
    # One table row per loss, the name first.
    rows = [line.split()[0] for line in out.splitlines() if line.strip()]
    for name in [*KD_NAMES, "SupConLoss"]:
        assert rows.count(name) == 1


def test_supkd_losses_json(capsys):
    assert main(["losses", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == [*KD_NAMES, "SupConLoss"]
    by_name = {r["name"]: r for r in rows}
    assert by_name["hinton_kl"]["arguments"] == {"temperature": 4.0}
    assert by_name["SupConLoss"]["kind"] == "pretrain"
