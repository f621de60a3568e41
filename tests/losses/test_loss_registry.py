"""The registry, build_loss, the class attributes and the `supkd losses` command."""

from __future__ import annotations

import json

import pytest
import torch

import supkd.losses as losses_pkg
from supkd.cli import main
from supkd.losses import LOSSES, KDLoss, SupConLoss, build_loss, loss_arguments, loss_label

# The built-in KD losses, in registration order (the paper's Table II order, then Hinton).
KD_NAMES = ["logit_mse", "norm_mse", "cosine", "gram", "supcon_kd", "hinton_kl"]
# The KD baselines beyond the paper (issue 14), registered after them.
BASELINES = ["dkd", "dist", "sp", "rkd", "crd"]
# The feature-distillation baselines (issue 22), registered after those.
FEATURE = ["fitnet", "at", "nst", "pkt", "kdsvd", "vid", "ofd", "reviewkd", "cc", "skd"]


def test_registry_holds_the_six_kd_losses_first_in_order():
    assert list(LOSSES)[: len(KD_NAMES)] == KD_NAMES
    assert list(LOSSES)[len(KD_NAMES) : len(KD_NAMES) + len(BASELINES)] == BASELINES
    start = len(KD_NAMES) + len(BASELINES)
    assert list(LOSSES)[start : start + len(FEATURE)] == FEATURE
    assert SupConLoss not in LOSSES.values()
    assert {"LOSSES", "build_loss", "SupConLoss", "KDLoss", "register_loss"} <= set(
        losses_pkg.__all__)
    # One file per built-in loss, named after it.
    for name in [*KD_NAMES, *BASELINES, *FEATURE]:
        assert LOSSES[name].__module__ == f"supkd.losses.{name}"
    # Read-only: only register_loss adds.
    with pytest.raises(TypeError):
        LOSSES["x"] = LOSSES["cosine"]  # type: ignore[index]


@pytest.mark.parametrize("name", list(LOSSES))
def test_build_loss_returns_the_registered_class_with_attributes(name):
    loss = build_loss(name)
    assert type(loss) is LOSSES[name]
    assert isinstance(loss, KDLoss) and isinstance(loss, torch.nn.Module)
    cls = LOSSES[name]
    assert isinstance(cls.paper_eq, str) and cls.paper_eq
    assert isinstance(cls.summary, str) and cls.summary
    assert isinstance(cls.reference, str) and cls.reference
    assert isinstance(cls.kd_table_row, bool)
    assert loss_label(name)
    for attr in ("needs_labels", "compares_samples", "same_width"):
        assert isinstance(getattr(loss, attr), bool), attr


def test_report_metadata_of_the_built_in_losses():
    # The labels the report's tables have always shown (now the classes' own metadata).
    assert {n: loss_label(n) for n in KD_NAMES} == {
        "logit_mse": "Baseline (logit MSE, Eq. 1)",
        "norm_mse": "Norm KD (Eq. 2)",
        "cosine": "Cosine KD (Eq. 3)",
        "gram": "Gram KD (Eq. 4)",
        "supcon_kd": "SupConKD (Eq. 5)",
        "hinton_kl": "Hinton KD (KL, T=4; not in the paper)",
    }
    assert all(LOSSES[n].kd_table_row for n in KD_NAMES)
    assert "Lee, Hyeon & Jeon" in LOSSES["gram"].reference
    assert "Hinton" in LOSSES["hinton_kl"].reference
    assert loss_label("not_registered") == "not_registered"


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


def test_baselines_attributes_follow_their_definitions():
    def flags(attr):
        return {n for n in BASELINES if getattr(build_loss(n), attr)}

    assert not any(LOSSES[n].kd_table_row for n in BASELINES)  # no row in Tables II/IV
    assert flags("needs_labels") == {"dkd"}
    assert flags("compares_samples") == {"dist", "sp", "rkd", "crd"}
    assert flags("same_width") == {"dkd", "dist"}
    assert flags("needs_index") == {"crd"}
    assert flags("flatten_inputs") == {"sp", "rkd", "crd"}
    references = {n: LOSSES[n].reference for n in BASELINES}
    for name, author in [("dkd", "Zhao"), ("dist", "Huang"), ("sp", "Tung"), ("rkd", "Park"),
                         ("crd", "Tian")]:
        assert author in references[name], name
    assert loss_arguments(LOSSES["dkd"]) == {
        "alpha": 1.0, "beta": 8.0, "temperature": 4.0, "standardize": False}
    assert loss_arguments(LOSSES["dist"]) == {"beta": 1.0, "gamma": 1.0, "temperature": 1.0}
    assert loss_arguments(LOSSES["rkd"]) == {"distance_weight": 25.0, "angle_weight": 50.0}
    assert loss_arguments(LOSSES["crd"]) == {
        "feat_dim": 128, "num_negatives": 16384, "temperature": 0.07, "momentum": 0.5}
    assert loss_arguments(LOSSES["hinton_kl"]) == {"temperature": 4.0, "standardize": False}
    assert loss_arguments(LOSSES["supcon_kd"])["positives"] == "label"


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
    for name in [*LOSSES, "SupConLoss"]:
        assert name in out
    for text in ("Eq. 1", "Eq. 5", "temperature=0.1", "normalize_student=True", "mode='sample'",
                 "beta=8.0", "num_negatives=16384", "distance_weight=25.0", "positives='label'"):
        assert text in out
    # One table row per loss, the name first.
    rows = [line.split()[0] for line in out.splitlines() if line.strip()]
    for name in [*LOSSES, "SupConLoss"]:
        assert rows.count(name) == 1


def test_supkd_losses_json(capsys):
    assert main(["losses", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == [*LOSSES, "SupConLoss"]
    assert [r["name"] for r in rows][: len(KD_NAMES)] == KD_NAMES
    by_name = {r["name"]: r for r in rows}
    assert by_name["hinton_kl"]["arguments"] == {"temperature": 4.0, "standardize": False}
    assert by_name["crd"]["needs_index"] is True and by_name["dkd"]["needs_index"] is False
    assert by_name["SupConLoss"]["kind"] == "pretrain"
    assert by_name["gram"]["label"] == "Gram KD (Eq. 4)"
    assert by_name["gram"]["module"] == "supkd.losses.gram"
