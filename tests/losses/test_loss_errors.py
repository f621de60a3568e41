"""Bad inputs and bad arguments raise ValueError with a message that names the problem."""

from __future__ import annotations

import re

import pytest
import torch

from supkd.losses import LOSSES, SupConLoss, build_loss

# The single-representation losses, called (student (B, D), teacher (B, D)); the
# multi-stage ones take lists and have their errors tested in test_feature_losses.py.
ALL_NAMES = [name for name in LOSSES if not LOSSES[name].multi_stage]
# Losses that compare features element-wise with their defaults (the registry test pins
# the built-in ones: logit_mse, norm_mse, cosine, supcon_kd, hinton_kl).
SAME_WIDTH = [name for name in ALL_NAMES if build_loss(name).same_width]


@pytest.mark.parametrize("name", ALL_NAMES)
def test_mismatched_batch_sizes_name_both_shapes(name):
    with pytest.raises(ValueError, match=re.escape("(4, 5)") + ".*" + re.escape("(3, 5)")):
        build_loss(name)(torch.randn(4, 5), torch.randn(3, 5))


@pytest.mark.parametrize("name", ALL_NAMES)
@pytest.mark.parametrize(
    ("s_shape", "t_shape"), [((4,), (4, 5)), ((4, 5), (4,)), ((4, 5, 2), (4, 5, 2)), ((), ())]
)
def test_wrong_rank_names_both_shapes(name, s_shape, t_shape):
    if LOSSES[name].flatten_inputs and len(s_shape) >= 2 and len(t_shape) >= 2:
        pytest.skip("flattens (B, ...) inputs per sample (test_loss_properties checks it)")
    with pytest.raises(ValueError) as err:
        build_loss(name)(torch.randn(s_shape), torch.randn(t_shape))
    assert str(tuple(s_shape)) in str(err.value)
    assert str(tuple(t_shape)) in str(err.value)


@pytest.mark.parametrize("name", SAME_WIDTH)
def test_width_mismatch_raises_for_elementwise_losses(name):
    with pytest.raises(ValueError, match=re.escape("(4, 5)") + ".*" + re.escape("(4, 7)")):
        build_loss(name)(torch.randn(4, 5), torch.randn(4, 7))


def test_gram_width_rules_depend_on_mode():
    s, t = torch.randn(4, 5), torch.randn(4, 7)
    assert torch.isfinite(build_loss("gram")(s, t))
    assert torch.isfinite(build_loss("gram", normalize=True)(s, t))
    with pytest.raises(ValueError, match=re.escape("(4, 5)") + ".*" + re.escape("(4, 7)")):
        build_loss("gram", mode="channel")(s, t)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_empty_batch_raises(name):
    with pytest.raises(ValueError, match="empty batch"):
        build_loss(name)(torch.randn(0, 5), torch.randn(0, 5))


@pytest.mark.parametrize("name", ALL_NAMES)
def test_non_floating_inputs_raise(name):
    with pytest.raises(ValueError, match=r"student.*floating"):
        build_loss(name)(torch.ones(3, 4, dtype=torch.long), torch.randn(3, 4))
    with pytest.raises(ValueError, match=r"teacher.*floating"):
        build_loss(name)(torch.randn(3, 4), torch.ones(3, 4, dtype=torch.long))


@pytest.mark.parametrize("name", ALL_NAMES)
def test_bad_labels_raise(name):
    s, t = torch.randn(4, 5), torch.randn(4, 5)
    loss = build_loss(name)
    with pytest.raises(ValueError, match=re.escape("(3,)")):
        loss(s, t, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=re.escape("(4, 1)")):
        loss(s, t, torch.zeros(4, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        loss(s, t, torch.zeros(4))


# ------------------------------------------------------------------------ bad constructor args


@pytest.mark.parametrize(
    ("name", "arg"),
    [("supcon_kd", "temperature"), ("hinton_kl", "temperature"), ("dkd", "temperature"),
     ("dist", "temperature"), ("crd", "temperature")],
)
@pytest.mark.parametrize("value", [0, 0.0, -0.1, float("nan"), float("inf"), True, "0.1", None])
def test_bad_temperature_names_the_argument(name, arg, value):
    with pytest.raises(ValueError, match=f"'{arg}'"):
        build_loss(name, **{arg: value})


@pytest.mark.parametrize(
    ("name", "arg"),
    [("dkd", "alpha"), ("dkd", "beta"), ("dist", "beta"), ("dist", "gamma"),
     ("rkd", "distance_weight"), ("rkd", "angle_weight"), ("crd", "momentum")],
)
@pytest.mark.parametrize("value", [-0.1, float("nan"), float("inf"), True, "1", None])
def test_bad_weight_names_the_argument(name, arg, value):
    with pytest.raises(ValueError, match=f"'{arg}'"):
        build_loss(name, **{arg: value})
    assert build_loss(name, **{arg: 0.0}) is not None  # zero switches a term off


@pytest.mark.parametrize(("arg", "value"), [
    ("momentum", 1.0), ("feat_dim", 0), ("feat_dim", 2.5), ("feat_dim", True),
    ("num_negatives", 0), ("num_negatives", "16384"), ("num_negatives", -3),
])
def test_bad_crd_arguments_name_the_argument(arg, value):
    with pytest.raises(ValueError, match=f"'{arg}'"):
        build_loss("crd", **{arg: value})


@pytest.mark.parametrize("value", ["labels", "Instance", "", None, 1])
def test_unknown_supcon_kd_positives_names_the_argument(value):
    with pytest.raises(ValueError, match=r"'positives'.*label.*instance"):
        build_loss("supcon_kd", positives=value)


@pytest.mark.parametrize(
    ("name", "flag"),
    [("supcon_kd", "normalize_student"), ("supcon_kd", "normalize_teacher"), ("gram", "normalize"),
     ("hinton_kl", "standardize"), ("dkd", "standardize")],
)
@pytest.mark.parametrize("value", [1, 0, "true", "False", None, 1.0])
def test_non_bool_flag_names_the_argument(name, flag, value):
    with pytest.raises(ValueError, match=f"'{flag}'"):
        build_loss(name, **{flag: value})


@pytest.mark.parametrize("mode", ["samples", "Channel", "", None, 1])
def test_unknown_gram_mode_names_the_argument(mode):
    with pytest.raises(ValueError, match=r"'mode'.*sample.*channel"):
        build_loss("gram", mode=mode)


@pytest.mark.parametrize(
    ("name", "arg"),
    [("cosine", "temperature"), ("supcon_kd", "tau"), ("gram", "normalise"), ("hinton_kl", "T")],
)
def test_unknown_argument_is_named(name, arg):
    with pytest.raises(ValueError, match=f"'{arg}'"):
        build_loss(name, **{arg: 1.0})


def test_standardize_needs_two_classes():
    with pytest.raises(ValueError, match="2 classes"):
        build_loss("hinton_kl", standardize=True)(torch.randn(3, 1), torch.randn(3, 1))


def test_index_must_match_the_batch():
    crd = build_loss("crd", feat_dim=4)
    crd.bind(5, 5, 10)
    s, t = torch.randn(4, 5), torch.randn(4, 5)
    with pytest.raises(ValueError, match=re.escape("(3,)")):
        crd(s, t, index=torch.arange(3))
    with pytest.raises(ValueError, match="integer"):
        crd(s, t, index=torch.zeros(4))
    with pytest.raises(ValueError, match=">= 0"):
        crd(s, t, index=torch.tensor([0, 1, -1, 2]))
    with pytest.raises(ValueError, match="tensor"):
        crd(s, t, index=[0, 1, 2, 3])


def test_unknown_loss_lists_valid_names():
    with pytest.raises(ValueError) as err:
        build_loss("supcon")  # the pre-training loss is not a KD loss
    message = str(err.value)
    assert "'supcon'" in message
    for name in LOSSES:
        assert name in message


# ------------------------------------------------------------------------------- SupConLoss


@pytest.mark.parametrize("shape", [(4, 8), (4,), (4, 2, 3, 3)])
def test_supcon_loss_wrong_rank(shape):
    with pytest.raises(ValueError, match=re.escape(str(shape))):
        SupConLoss()(torch.randn(shape))


def test_supcon_loss_bad_labels_and_args():
    feats = torch.randn(4, 2, 3)
    with pytest.raises(ValueError, match=re.escape("(5,)")):
        SupConLoss()(feats, torch.arange(5))
    with pytest.raises(ValueError, match="integer"):
        SupConLoss()(feats, torch.zeros(4))
    with pytest.raises(ValueError, match="empty batch"):
        SupConLoss()(torch.randn(0, 2, 3))
    with pytest.raises(ValueError, match="'temperature'"):
        SupConLoss(temperature=0)
    with pytest.raises(ValueError, match="'base_temperature'"):
        SupConLoss(base_temperature=-1.0)
