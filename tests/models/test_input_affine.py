"""``create_model(..., input_affine=...)``: a teacher trained with other input statistics sees,
on supkd-normalized images, exactly the inputs of its own training.

For raw pixels p, the teacher was trained on x_t = (p - mu_t) / sigma_t and supkd's loaders
give x_d = (p - mu_d) / sigma_d; with scale = sigma_d / sigma_t and shift = (mu_d - mu_t) /
sigma_t, the corrected model on x_d must equal the uncorrected one on x_t.
"""

from __future__ import annotations

import math

import pytest
import torch

from supkd.models import create_model, to_torchvision_state_dict
from supkd.train.checkpoint import load_model, save_model

# SupContrast's main_supcon.py set_loader (cifar10) vs supkd's cifar10 statistics: equal
# means, different stds; and ImageNet statistics vs supkd's cifar100, which need a shift too.
CASES = {
    "supcontrast-cifar10->cifar10": (
        ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
        ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    ),
    "imagenet->cifar100": (
        ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    ),
}


def _affine(teacher, data) -> dict[str, list[float]]:
    (mt, st), (md, sd) = teacher, data
    return {
        "scale": [d / t for d, t in zip(sd, st)],
        "shift": [(a - b) / t for a, b, t in zip(md, mt, st)],
    }


def _randomize_bn(net: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)


def _pair(case: str, **kw):
    """(original model, same weights + input_affine, teacher stats, data stats)."""
    teacher, data = CASES[case]
    torch.manual_seed(0)
    base = create_model("resnet18", width=8, num_classes=5, projection_dim=4, **kw)
    _randomize_bn(base, 1)
    fixed = create_model(
        "resnet18", width=8, num_classes=5, projection_dim=4, input_affine=_affine(teacher, data)
    )
    fixed.load_state_dict(base.state_dict())
    return base.eval(), fixed.eval(), teacher, data


def _inputs(teacher, data, dtype, n: int = 3, size: int = 32):
    """Teacher-normalized and supkd-normalized versions of the same raw pixels in [0, 1]."""
    p = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(5), dtype=dtype)

    def norm(stats):
        mean, std = (torch.tensor(v, dtype=dtype).view(1, 3, 1, 1) for v in stats)
        return (p - mean) / std

    return norm(teacher), norm(data)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_corrected_model_on_supkd_inputs_equals_teacher_on_its_own(case, dtype, tol):
    base, fixed, teacher, data = _pair(case)
    base.to(dtype)
    fixed.to(dtype)
    x_t, x_d = _inputs(teacher, data, dtype)
    with torch.no_grad():
        ref, out = base(x_t), fixed(x_d)
        for a, b in zip(ref, out):
            torch.testing.assert_close(b, a, rtol=0, atol=tol)
        ref_i, out_i = base.forward_intermediates(x_t), fixed.forward_intermediates(x_d)
        assert list(out_i) == list(ref_i)
        for name in ref_i:
            torch.testing.assert_close(out_i[name], ref_i[name], rtol=0, atol=tol, msg=name)
        # the linear stage and other callers of the encoder alone get the correction too
        torch.testing.assert_close(fixed.encoder(x_d), base.encoder(x_t), rtol=0, atol=tol)
        # and the correction is not a no-op: uncorrected, supkd inputs give other outputs
        assert (base(x_d).logits - ref.logits).abs().max() > 100 * tol


def test_double_holds_the_exact_values_not_float32_rounded():
    net = create_model("resnet18", width=4, input_affine={"scale": [0.1] * 3, "shift": [0.3] * 3})
    net.double()
    affine = net.encoder.input_affine
    assert affine.scale.dtype == torch.float64
    assert affine.scale.flatten().tolist() == [0.1] * 3  # float32(0.1) != 0.1
    assert affine.shift.flatten().tolist() == [0.3] * 3
    net.float()
    assert affine.scale.dtype == torch.float32


def test_channels_last():
    base, fixed, teacher, data = _pair("imagenet->cifar100")
    x_t, x_d = _inputs(teacher, data, torch.float32)
    fixed = fixed.to(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = base(x_t)
        out = fixed(x_d.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out.logits, ref.logits, rtol=0, atol=2e-5)
    torch.testing.assert_close(out.projection, ref.projection, rtol=0, atol=2e-5)


def test_torch_compile_traces_the_affine():
    base, fixed, teacher, data = _pair("imagenet->cifar100")
    x_t, x_d = _inputs(teacher, data, torch.float32, n=2, size=16)
    compiled = torch.compile(fixed, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x_d).logits, base(x_t).logits, rtol=0, atol=2e-5)


def test_spec_round_trip_through_model_file(tmp_path):
    base, fixed, teacher, data = _pair("imagenet->cifar100")
    assert fixed.spec["input_affine"] == _affine(teacher, data)
    # non-persistent buffers: the weights carry exactly the keys of a plain model
    assert list(fixed.state_dict()) == list(base.state_dict())
    assert list(to_torchvision_state_dict(fixed)) == list(to_torchvision_state_dict(base))
    save_model(tmp_path / "model.pt", fixed, {"task": "import"})
    again = load_model(tmp_path / "model.pt")
    assert again.spec == fixed.spec
    x_t, x_d = _inputs(teacher, data, torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(again(x_d).logits, fixed(x_d).logits, rtol=0, atol=0)
        torch.testing.assert_close(again(x_d).logits, base(x_t).logits, rtol=0, atol=2e-5)


def test_spec_without_affine_is_unchanged_and_old_files_load(tmp_path):
    net = create_model("resnet18", width=4, num_classes=3)
    assert "input_affine" not in net.spec
    assert net.encoder.input_affine is None
    assert not any("input_affine" in name for name, _ in net.named_modules())
    assert create_model("resnet18", width=4, num_classes=3, input_affine=None).spec == net.spec
    # a model.pt written before the option existed (its spec has no such key)
    old_spec = {
        "name": "resnet18",
        "stem": "cifar",
        "num_classes": 3,
        "projection_dim": None,
        "width": 4,
        "in_channels": 3,
    }
    assert net.spec == old_spec
    torch.save(
        {"format": "supkd-model", "version": 1, "spec": old_spec, "state_dict": net.state_dict()},
        tmp_path / "model.pt",
    )
    again = load_model(tmp_path / "model.pt")
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(again(x).logits, net.eval()(x).logits, rtol=0, atol=0)


def test_one_channel_model():
    net = create_model(
        "resnet18", width=4, in_channels=1, input_affine={"scale": [2], "shift": [1]}
    )
    assert net.spec["input_affine"] == {"scale": [2.0], "shift": [1.0]}
    assert net(torch.randn(2, 1, 8, 8)).logits.shape == (2, 10)


@pytest.mark.parametrize(
    ("affine", "field"),
    [
        ({"scale": [1.0, 1.0], "shift": [0.0, 0.0, 0.0]}, "input_affine.scale"),
        ({"scale": [1.0] * 3, "shift": [0.0] * 4}, "input_affine.shift"),
        ({"scale": [1.0, 0.0, 1.0], "shift": [0.0] * 3}, "input_affine.scale"),
        ({"scale": [1.0, -2.0, 1.0], "shift": [0.0] * 3}, "input_affine.scale"),
        ({"scale": [1.0, math.nan, 1.0], "shift": [0.0] * 3}, "input_affine.scale"),
        ({"scale": [1.0] * 3, "shift": [0.0, math.inf, 0.0]}, "input_affine.shift"),
        ({"scale": [1.0] * 3, "shift": ["0", 0.0, 0.0]}, "input_affine.shift"),
        ({"scale": [True] * 3, "shift": [0.0] * 3}, "input_affine.scale"),
        ({"scale": "1,1,1", "shift": [0.0] * 3}, "input_affine.scale"),
        ({"scale": [1.0] * 3}, "input_affine"),
        ({"scale": [1.0] * 3, "shift": [0.0] * 3, "bias": 1}, "input_affine"),
        ([1.0, 0.0], "input_affine"),
    ],
)
def test_bad_affine_raises_value_error_naming_the_field(affine, field):
    with pytest.raises(ValueError, match=rf"^{field}: expected"):
        create_model("resnet18", width=4, input_affine=affine)
