"""RepDistiller / mdistiller teacher files imported onto the zoo, checked against an
independent float64 reference.

The reference below is not the zoo's code: it is a functional forward pass written from
the published definitions, reading their checkpoint's keys (``layer1.0.conv1.weight``,
``block1.layer.0.bn1.weight``, ``blocks.0.0.conv.0.weight``, ...) with ``F.conv2d`` and an
explicit BatchNorm formula. Its state dicts are generated from the key layout of each
architecture, their BatchNorm statistics calibrated on images (so that activations stay of
order one, as in a trained network), then saved as RepDistiller's ``train_teacher.py``
saves them: ``{"epoch", "model", "accuracy", "optimizer"}`` under ``<arch>_vanilla/``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from supkd.cli import main
from supkd.data.datasets import NORMALIZATION
from supkd.errors import CheckpointError
from supkd.importers import detect_format, import_teacher
from supkd.models import load_model

THEIR_MEAN, THEIR_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)


# ---------------------------------------------------------------- the reference ---------
class Ref:
    """Functional forward over a state dict with their keys (float64). ``calibrate``: each
    BatchNorm first sets its running statistics to those of the batch it sees."""

    def __init__(self, sd: dict[str, torch.Tensor], calibrate: bool = False) -> None:
        self.sd, self.calibrate = sd, calibrate

    def conv(self, x, p, stride=1, pad=0, groups=1):
        return F.conv2d(x, self.sd[p + ".weight"], self.sd.get(p + ".bias"), stride, pad, 1,
                        groups)

    def bn(self, x, p):
        if self.calibrate:
            self.sd[p + ".running_mean"] = x.mean(dim=(0, 2, 3)).detach()
            # + 1: a well-conditioned network, whose float32 rounding stays far below 1e-5
            self.sd[p + ".running_var"] = x.var(dim=(0, 2, 3), unbiased=False).detach() + 1.0
        c = (1, -1, 1, 1)
        m, v = self.sd[p + ".running_mean"].view(c), self.sd[p + ".running_var"].view(c)
        return (x - m) / torch.sqrt(v + 1e-5) * self.sd[p + ".weight"].view(c) \
            + self.sd[p + ".bias"].view(c)

    def linear(self, x, p):
        return x @ self.sd[p + ".weight"].T + self.sd[p + ".bias"]


def shuffle(x, g):
    b, c, h, w = x.shape
    return x.view(b, g, c // g, h, w).permute(0, 2, 1, 3, 4).reshape(b, c, h, w)


def resnet_fwd(r: Ref, x, n_blocks=1):
    """RepDistiller's CIFAR ResNet (resnet8x4: 1 block per stage)."""
    x = F.relu(r.bn(r.conv(x, "conv1", 1, 1), "bn1"))
    for s, stride in zip((1, 2, 3), (1, 2, 2)):
        for b in range(n_blocks):
            p = f"layer{s}.{b}"
            y = F.relu(r.bn(r.conv(x, p + ".conv1", stride if b == 0 else 1, 1), p + ".bn1"))
            y = r.bn(r.conv(y, p + ".conv2", 1, 1), p + ".bn2")
            if p + ".downsample.0.weight" in r.sd:
                x = r.bn(r.conv(x, p + ".downsample.0", stride if b == 0 else 1),
                         p + ".downsample.1")
            x = F.relu(x + y)
    return r.linear(x.mean(dim=(2, 3)), "fc")


def wrn_fwd(r: Ref, x, n=2):
    """WRN: pre-activation blocks; the 1x1 shortcut reads the activated input."""
    x = r.conv(x, "conv1", 1, 1)
    for g, stride in zip((1, 2, 3), (1, 2, 2)):
        for i in range(n):
            p = f"block{g}.layer.{i}"
            s = stride if i == 0 else 1
            a = F.relu(r.bn(x, p + ".bn1"))
            y = r.conv(F.relu(r.bn(r.conv(a, p + ".conv1", s, 1), p + ".bn2")), p + ".conv2", 1, 1)
            x = (r.conv(a, p + ".convShortcut", s) if p + ".convShortcut.weight" in r.sd else x) + y
    return r.linear(F.relu(r.bn(x, "bn1")).mean(dim=(2, 3)), "fc")


def vgg8_fwd(r: Ref, x):
    for i in range(5):
        if 1 <= i <= 3:
            x = F.max_pool2d(x, 2)
        x = F.relu(r.bn(r.conv(x, f"block{i}.0", 1, 1), f"block{i}.1"))
    return r.linear(x.mean(dim=(2, 3)), "classifier")


MBV2_GROUPS = ((1, 8, 1, 1), (6, 12, 2, 1), (6, 16, 3, 2), (6, 32, 4, 2), (6, 48, 3, 1),
               (6, 80, 3, 2), (6, 160, 1, 1))


def mbv2_fwd(r: Ref, x):
    x = F.relu(r.bn(r.conv(x, "conv1.0", 2, 1), "conv1.1"))
    c = 16
    for g, (t, out, n, s) in enumerate(MBV2_GROUPS):
        for i in range(n):
            p = f"blocks.{g}.{i}.conv"
            st = s if i == 0 else 1
            y = F.relu(r.bn(r.conv(x, p + ".0"), p + ".1"))
            y = F.relu(r.bn(r.conv(y, p + ".3", st, 1, groups=c * t), p + ".4"))
            y = r.bn(r.conv(y, p + ".6"), p + ".7")
            x = x + y if (st == 1 and c == out) else y
            c = out
    x = F.relu(r.bn(r.conv(x, "conv2.0"), "conv2.1"))
    return r.linear(x.mean(dim=(2, 3)), "classifier.0")


def shufflev1_fwd(r: Ref, x):
    x = F.relu(r.bn(r.conv(x, "conv1"), "bn1"))
    c_in = 24
    for s, (planes, n) in enumerate(zip((240, 480, 960), (4, 8, 4)), start=1):
        for i in range(n):
            p = f"layer{s}.{i}"
            g1 = 1 if c_in == 24 else 3
            mid = r.sd[p + ".conv1.weight"].shape[0]
            y = shuffle(F.relu(r.bn(r.conv(x, p + ".conv1", groups=g1), p + ".bn1")), g1)
            y = F.relu(r.bn(r.conv(y, p + ".conv2", 2 if i == 0 else 1, 1, groups=mid), p + ".bn2"))
            y = r.bn(r.conv(y, p + ".conv3", groups=3), p + ".bn3")
            x = F.relu(torch.cat([y, F.avg_pool2d(x, 3, 2, 1)], 1) if i == 0 else y + x)
            c_in = planes
    return r.linear(x.mean(dim=(2, 3)), "linear")


# ------------------------------------------------------------ their key layouts ----------
def _bn(sd, p, c):
    sd.update({f"{p}.weight": (c,), f"{p}.bias": (c,), f"{p}.running_mean": (c,),
               f"{p}.running_var": (c,), f"{p}.num_batches_tracked": ()})


def layout_resnet8x4(k=100):
    sd: dict = {"conv1.weight": (32, 3, 3, 3)}
    _bn(sd, "bn1", 32)
    c = 32
    for s, w in zip((1, 2, 3), (64, 128, 256)):
        p = f"layer{s}.0"
        sd[p + ".conv1.weight"] = (w, c, 3, 3)
        _bn(sd, p + ".bn1", w)
        sd[p + ".conv2.weight"] = (w, w, 3, 3)
        _bn(sd, p + ".bn2", w)
        sd[p + ".downsample.0.weight"] = (w, c, 1, 1)
        _bn(sd, p + ".downsample.1", w)
        c = w
    sd.update({"fc.weight": (k, 256), "fc.bias": (k,)})
    return sd


def layout_wrn_16_2(k=100):
    sd: dict = {"conv1.weight": (16, 3, 3, 3)}
    c = 16
    for g, w in zip((1, 2, 3), (32, 64, 128)):
        for i in range(2):
            p = f"block{g}.layer.{i}"
            cin = c if i == 0 else w
            _bn(sd, p + ".bn1", cin)
            sd[p + ".conv1.weight"] = (w, cin, 3, 3)
            _bn(sd, p + ".bn2", w)
            sd[p + ".conv2.weight"] = (w, w, 3, 3)
            if cin != w:
                sd[p + ".convShortcut.weight"] = (w, cin, 1, 1)
        c = w
    _bn(sd, "bn1", 128)
    sd.update({"fc.weight": (k, 128), "fc.bias": (k,)})
    return sd


def layout_vgg8(k=100):
    sd: dict = {}
    c = 3
    for i, w in enumerate((64, 128, 256, 512, 512)):
        sd.update({f"block{i}.0.weight": (w, c, 3, 3), f"block{i}.0.bias": (w,)})
        _bn(sd, f"block{i}.1", w)
        c = w
    sd.update({"classifier.weight": (k, 512), "classifier.bias": (k,)})
    return sd


def layout_mbv2(k=100):
    sd: dict = {"conv1.0.weight": (16, 3, 3, 3)}
    _bn(sd, "conv1.1", 16)
    c = 16
    for g, (t, out, n, _) in enumerate(MBV2_GROUPS):
        for i in range(n):
            p, mid = f"blocks.{g}.{i}.conv", c * t
            sd[p + ".0.weight"] = (mid, c, 1, 1)
            _bn(sd, p + ".1", mid)
            sd[p + ".3.weight"] = (mid, 1, 3, 3)
            _bn(sd, p + ".4", mid)
            sd[p + ".6.weight"] = (out, mid, 1, 1)
            _bn(sd, p + ".7", out)
            c = out
    sd["conv2.0.weight"] = (1280, 160, 1, 1)
    _bn(sd, "conv2.1", 1280)
    sd.update({"classifier.0.weight": (k, 1280), "classifier.0.bias": (k,)})
    return sd


def layout_shufflev1(k=100):
    sd: dict = {"conv1.weight": (24, 3, 1, 1)}
    _bn(sd, "bn1", 24)
    c = 24
    for s, (planes, n) in enumerate(zip((240, 480, 960), (4, 8, 4)), start=1):
        for i in range(n):
            p = f"layer{s}.{i}"
            out = planes - c if i == 0 else planes
            mid = out // 4
            g1 = 1 if c == 24 else 3
            sd[p + ".conv1.weight"] = (mid, c // g1, 1, 1)
            _bn(sd, p + ".bn1", mid)
            sd[p + ".conv2.weight"] = (mid, 1, 3, 3)
            _bn(sd, p + ".bn2", mid)
            sd[p + ".conv3.weight"] = (out, mid // 3, 1, 1)
            _bn(sd, p + ".bn3", out)
            c = planes
    sd.update({"linear.weight": (k, 960), "linear.bias": (k,)})
    return sd


CASES: dict[str, tuple[Callable, Callable]] = {
    "resnet8x4": (layout_resnet8x4, resnet_fwd),
    "wrn_16_2": (layout_wrn_16_2, wrn_fwd),
    "vgg8": (layout_vgg8, vgg8_fwd),
    "MobileNetV2": (layout_mbv2, mbv2_fwd),
    "ShuffleV1": (layout_shufflev1, shufflev1_fwd),
}


def their_state(arch: str, seed: int = 0, classes: int = 100) -> dict[str, torch.Tensor]:
    """A float32 state dict with their keys: random weights, calibrated BN statistics."""
    layout, fwd = CASES[arch]
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for k, shape in layout(classes).items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(1000, dtype=torch.long)
        elif k.endswith(("running_mean", "running_var")):
            sd[k] = torch.zeros(shape, dtype=torch.float64)
        elif k.endswith("weight") and len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            sd[k] = torch.randn(shape, generator=gen, dtype=torch.float64) * math.sqrt(2 / fan_in)
        elif len(shape) == 2:
            sd[k] = torch.randn(shape, generator=gen, dtype=torch.float64) / math.sqrt(shape[1])
        elif k.endswith("weight"):
            sd[k] = 0.5 + torch.rand(shape, generator=gen, dtype=torch.float64)
        else:
            sd[k] = 0.2 * torch.randn(shape, generator=gen, dtype=torch.float64)
    calib = torch.randn(32, 3, 32, 32, generator=gen, dtype=torch.float64)
    fwd(Ref(sd, calibrate=True), calib)
    return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}


def save_theirs(folder: Path, sd: dict, accuracy: object = None, epoch=240, **extra) -> Path:
    accuracy = torch.tensor(73.25) if accuracy is None else accuracy
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "ckpt_epoch_240.pth"
    momentum = {i: {"momentum_buffer": torch.zeros(2)} for i in range(2)}
    torch.save({"epoch": epoch, "model": sd, "accuracy": accuracy,
                "optimizer": {"state": momentum, "param_groups": [{"lr": 0.0005}]}, **extra},
               path)
    return path


def pixels(n: int = 6, seed: int = 3) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed),
                      dtype=torch.float64)


def normalize(pix: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float64).view(1, 3, 1, 1)
    return (pix - m) / s


# ------------------------------------------------------------------------ tests ---------
@pytest.mark.parametrize("arch", list(CASES))
def test_imported_logits_equal_the_reference(arch, tmp_path):
    sd = their_state(arch)
    path = save_theirs(tmp_path / f"{arch}_vanilla", sd)
    assert detect_format(path)[0] == "repdistiller"
    ref = CASES[arch][1]
    pix = pixels()
    x_theirs = normalize(pix, THEIR_MEAN, THEIR_STD)
    with torch.no_grad():
        expected = ref(Ref({k: v.double() if v.is_floating_point() else v
                            for k, v in sd.items()}), x_theirs)
        assert expected.abs().max() > 0.5  # logits of a size where an error would show
        # float32, the same normalized images into both (the reference in float32 too)
        same = import_teacher(path, input_norm="none")
        assert same.arch == arch and same.format == "repdistiller"
        got = same.model.eval()(x_theirs.float()).logits
        assert (got.double() - expected).abs().max().item() <= 1e-5
        # with their CIFAR-100 statistics corrected onto supkd's: supkd's normalization of
        # the same pixels, in float64 so that only the correction's exactness is measured
        imp = import_teacher(path, data="cifar100")
        net = imp.model.eval().double()
        x_supkd = normalize(pix, *NORMALIZATION["cifar100"])
        got64 = net(x_supkd).logits
        assert (got64 - expected).abs().max().item() <= 1e-9
        got32 = imp.model.float()(x_supkd.float()).logits
        assert (got32.double() - expected).abs().max().item() <= 1e-4
    assert imp.input_norm["mean"] == list(THEIR_MEAN)
    assert imp.recorded == {"accuracy": pytest.approx(73.25), "epoch": 240}


@pytest.mark.slow
def test_cli_writes_a_run_with_the_recorded_accuracy_and_epoch(tmp_path, capsys):
    path = save_theirs(tmp_path / "resnet8x4_vanilla", their_state("resnet8x4"),
                       accuracy=torch.tensor(73.0918), epoch=240)
    out = tmp_path / "runs" / "resnet8x4"
    code = main(["import-teacher", str(path), "--data", "cifar100", "--out", str(out)])
    cap = capsys.readouterr()
    assert code == 0, cap.err
    assert "repdistiller resnet8x4" in cap.out and "inputs corrected" in cap.out
    meta = yaml.safe_load((out / "config.yaml").read_text())["meta"]["imported"]
    assert meta["accuracy"] == pytest.approx(73.0918, abs=1e-4) and meta["epoch"] == 240
    assert meta["format"] == "repdistiller"
    assert json.loads((out / "result.json").read_text())["meta"]["imported"] == meta
    net = load_model(out).eval()
    assert net.spec["name"] == "resnet8x4" and "input_affine" in net.spec
    with torch.no_grad():
        ref = resnet_fwd(Ref({k: v.double() if v.is_floating_point() else v
                              for k, v in their_state("resnet8x4").items()}),
                         normalize(pixels(), THEIR_MEAN, THEIR_STD))
        got = net.double()(normalize(pixels(), *NORMALIZATION["cifar100"])).logits
    assert (got - ref).abs().max().item() <= 1e-9


def test_arch_from_flag_when_the_folder_does_not_say(tmp_path):
    path = save_theirs(tmp_path / "my_teachers", their_state("vgg8"))
    with pytest.raises(CheckpointError, match="--arch"):
        import_teacher(path, data="cifar100")
    assert import_teacher(path, arch="vgg8", data="cifar100").arch == "vgg8"


def test_the_longest_zoo_name_wins(tmp_path):
    """``resnet8x4_vanilla`` is resnet8x4, not resnet8; ``wrn_16_2_...`` is wrn_16_2."""
    p = save_theirs(tmp_path / "resnet8x4_cifar100_lr_0.05_decay_0.0005_trial_0",
                    their_state("resnet8x4"))
    assert import_teacher(p, data="cifar100").arch == "resnet8x4"


def test_wrong_arch_names_the_keys(tmp_path):
    path = save_theirs(tmp_path / "x", their_state("resnet8x4"))
    with pytest.raises(CheckpointError, match=r"does not fit a resnet8 \(.*layer1\.0"):
        import_teacher(path, arch="resnet8", data="cifar100")
    with pytest.raises(CheckpointError, match="not a model of the KD zoo"):
        import_teacher(path, arch="resnet9", fmt="repdistiller")


def test_pickled_code_is_refused_with_one_line(tmp_path, capsys):
    folder = tmp_path / "resnet8_vanilla"
    folder.mkdir()
    path = folder / "ckpt_epoch_240.pth"
    torch.save({"epoch": 240, "model": torch.nn.Linear(2, 2), "accuracy": 70.0}, path)
    code = main(["import-teacher", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "pickled" in err and str(path) in err
    assert not (tmp_path / "out" / "model.pt").exists()


def test_mdistiller_distiller_state_and_best_acc(tmp_path):
    """mdistiller's own ``latest`` file: the distiller's ``module.student.*`` keys, best_acc."""
    sd = their_state("wrn_16_2")
    wrapped = {f"module.student.{k}": v for k, v in sd.items()}
    path = tmp_path / "wrn_16_2_run" / "latest"
    path.parent.mkdir()
    torch.save({"epoch": 199, "model": wrapped, "best_acc": 75.61,
                "optimizer": {"state": {}, "param_groups": []}}, path)
    imp = import_teacher(path, input_norm="none")
    assert imp.arch == "wrn_16_2" and imp.recorded == {"accuracy": 75.61, "epoch": 199}
    with torch.no_grad():
        ref = wrn_fwd(Ref({k: v.double() if v.is_floating_point() else v
                           for k, v in sd.items()}), normalize(pixels(), THEIR_MEAN, THEIR_STD))
        got = imp.model.eval().double()(normalize(pixels(), THEIR_MEAN, THEIR_STD)).logits
    assert (got - ref).abs().max().item() <= 1e-9


@pytest.mark.slow
def test_check_measures_the_test_split(tmp_path, capsys):
    """--check on the digits (one channel): the printed and recorded accuracy equal an
    evaluation of the saved model written out here."""
    from supkd.config import DataConfig
    from supkd.data import build_data

    sd = their_state("vgg8", classes=10)
    sd["block0.0.weight"] = sd["block0.0.weight"][:, :1].contiguous()  # a 1-channel stem
    path = save_theirs(tmp_path / "vgg8_vanilla", sd, accuracy=torch.tensor(91.5))
    out = tmp_path / "t"
    code = main(["import-teacher", str(path), "--input-norm", "none", "--out", str(out),
                 "--check", "digits"])
    cap = capsys.readouterr()
    assert code == 0, cap.err
    meta = yaml.safe_load((out / "config.yaml").read_text())["meta"]["imported"]
    bundle = build_data(DataConfig(name="digits", val_fraction=0.0), seed=0)
    net = load_model(out).eval()
    mean, std = bundle.mean[0], bundle.std[0]
    correct = 0
    with torch.no_grad():
        for i in range(len(bundle.test)):
            img, label = bundle.test[i]
            x = (img.float().unsqueeze(0) / 255.0 - mean) / std
            correct += int(net(x).logits.argmax(1).item() == label)
    acc = 100.0 * correct / len(bundle.test)
    assert meta["check"]["test_acc"] == pytest.approx(acc, abs=1e-9)
    assert meta["check"]["num_images"] == len(bundle.test)
    assert f"test accuracy {acc:.2f}%" in cap.out and "recorded in the file: 91.50%" in cap.out
