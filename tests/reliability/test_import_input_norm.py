"""``supkd import-teacher --input-norm/--data``: an imported teacher sees, on supkd's inputs,
the inputs of its own training.

The reference is the SupContrast network itself (tests/reliability/supcontrast_reference.py)
fed the same raw pixels normalized as SupContrast's ``set_loader`` (main_supcon.py) does;
the imported model is fed those pixels normalized with supkd's statistics of the data set
(``supkd.data.datasets.NORMALIZATION``), as the training loader does.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest
import torch
import torchvision
import yaml

from supkd.cli import main
from supkd.data.datasets import NORMALIZATION
from supkd.errors import UserError
from supkd.importers import INPUT_NORMS, import_teacher
from supkd.train.checkpoint import load_model

sys.path.insert(0, str(Path(__file__).parent))
from supcontrast_reference import LinearClassifierNet, SupConNet, randomize_bn

# SupContrast's main_supcon.py set_loader, written out here (not read from supkd) so that a
# wrong constant in supkd fails the test.
SUPCONTRAST = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
}
PATH_MEAN, PATH_STD = "(0.5, 0.45, 0.4)", "(0.25, 0.3, 0.2)"
TOL = 1e-5  # float32 through a full-width ResNet-18 (measured: ~2e-7)


def _normalized(pixels: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.tensor(mean, dtype=torch.float64).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float64).view(1, -1, 1, 1)
    return ((pixels.double() - m) / s).float()


def _pixels(n: int = 3, size: int = 32) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(11))


def _save(path: Path, net: torch.nn.Module, **opt) -> Path:
    """As SupContrast's util.save_model: the argparse options travel in the checkpoint."""
    torch.save(
        {"opt": argparse.Namespace(model="resnet18", **opt), "model": net.state_dict()}, path
    )
    return path


@pytest.fixture(scope="module")
def supcon(tmp_path_factory):
    """A SupContrast ResNet-18 (randomized BN), its classifier, and checkpoints saved with
    opt.dataset cifar10 / cifar100 / path / absent / unknown."""
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("supcon_norm")
    net = SupConNet("resnet18", feat_dim=16)
    randomize_bn(net, seed=3)
    cls = LinearClassifierNet(512, 10)
    torch.save({"model": cls.state_dict()}, d / "cls.pth")
    files = {
        "cifar10": _save(d / "c10.pth", net, dataset="cifar10"),
        "cifar100": _save(d / "c100.pth", net, dataset="cifar100"),
        "path": _save(d / "path.pth", net, dataset="path", mean=PATH_MEAN, std=PATH_STD),
        "absent": _save(d / "absent.pth", net),
        "unknown": _save(d / "unknown.pth", net, dataset="svhn"),
        "bad_mean": _save(d / "bad.pth", net, dataset="path", mean="mean!", std=PATH_STD),
    }
    return net.eval(), cls.eval(), d, files


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["import-teacher", *argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _import(capsys, source: Path, out: Path, *flags: str) -> tuple[torch.nn.Module, dict, str]:
    code, stdout, err = _cli(
        capsys, str(source), "--classifier", str(source.parent / "cls.pth"), "--out", str(out),
        *flags,
    )  # fmt: skip
    assert code == 0, err
    meta = yaml.safe_load((out / "config.yaml").read_text())["meta"]["imported"]
    assert json.loads((out / "result.json").read_text())["meta"]["imported"] == meta
    return load_model(out).eval(), meta, stdout


def _assert_reproduces(model, net, cls, x_supkd, x_teacher, tol=TOL) -> None:
    with torch.no_grad():
        out = model(x_supkd)
        feat = net.encoder(x_teacher)
        torch.testing.assert_close(out.embedding, feat, rtol=0, atol=tol)
        torch.testing.assert_close(out.projection, net(x_teacher), rtol=0, atol=tol)
        torch.testing.assert_close(out.logits, cls(feat), rtol=0, atol=tol)
        inter = model.forward_intermediates(x_supkd)
        torch.testing.assert_close(inter["embedding"], feat, rtol=0, atol=tol)


@pytest.mark.parametrize(
    ("dataset", "flags", "data"),
    [
        ("cifar10", (), "cifar10"),
        ("cifar100", (), "cifar100"),
        ("path", ("--data", "cifar10"), "cifar10"),
        ("cifar10", ("--data", "cifar100"), "cifar100"),
    ],
)
def test_auto_reads_opt_and_reproduces_supcontrast_on_supkd_inputs(
    supcon, tmp_path, capsys, dataset, flags, data
):
    net, cls, _, files = supcon
    model, meta, stdout = _import(capsys, files[dataset], tmp_path / "t", *flags)
    if dataset == "path":
        t_mean, t_std = (0.5, 0.45, 0.4), (0.25, 0.3, 0.2)
    else:
        t_mean, t_std = SUPCONTRAST[dataset]
    d_mean, d_std = NORMALIZATION[data]
    p = _pixels()
    x_t, x_d = _normalized(p, t_mean, t_std), _normalized(p, d_mean, d_std)
    _assert_reproduces(model, net, cls, x_d, x_t)
    # without the correction the same supkd inputs give outputs off by more than TOL (for
    # cifar100, whose two sets of statistics differ in the 4th digit, by ~5e-5)
    with torch.no_grad():
        off = (net.encoder(x_d) - net.encoder(x_t)).abs().max()
        assert max(off, (net(x_d) - net(x_t)).abs().max()) > 2 * TOL

    assert meta["data"] == data
    # the run's config names the data set the correction was made for (not the default)
    assert yaml.safe_load((tmp_path / "t" / "config.yaml").read_text())["data"]["name"] == data
    assert meta["input_norm"]["mean"] == pytest.approx(t_mean, abs=0)
    assert meta["input_norm"]["std"] == pytest.approx(t_std, abs=0)
    assert f"opt.dataset={dataset}" in meta["input_norm"]["source"]
    assert meta["input_affine"] == model.spec["input_affine"]
    assert meta["input_affine"]["scale"] == pytest.approx(
        [d / t for d, t in zip(d_std, t_std)], rel=1e-12
    )
    assert meta["input_affine"]["shift"] == pytest.approx(
        [(a - b) / t for a, b, t in zip(d_mean, t_mean, t_std)], rel=1e-12, abs=1e-15
    )
    lines = [ln for ln in stdout.splitlines() if ln.startswith("input normalization")]
    assert len(lines) == 1 and "corrected" in lines[0] and data in lines[0], stdout


def test_none_leaves_the_teacher_uncorrected(supcon, tmp_path, capsys):
    net, cls, _, files = supcon
    model, meta, stdout = _import(capsys, files["cifar10"], tmp_path / "t", "--input-norm", "none")
    assert "input_affine" not in model.spec
    assert meta["input_norm"] == {"mean": None, "std": None, "source": "--input-norm none"}
    assert meta["input_affine"] is None
    assert "not corrected" in stdout
    x = torch.randn(2, 3, 32, 32)
    _assert_reproduces(model, net, cls, x, x, tol=0)


def test_explicit_statistics_override_the_checkpoint(supcon, tmp_path, capsys):
    """``--input-norm`` wins over opt.dataset; a custom mean/std string works with --data."""
    net, cls, _, files = supcon
    p = _pixels()
    model, meta, _ = _import(
        capsys, files["absent"], tmp_path / "a", "--input-norm", "supcontrast-cifar100"
    )
    assert meta["data"] == "cifar100" and meta["input_norm"]["source"].startswith("--input-norm")
    _assert_reproduces(
        model,
        net,
        cls,
        _normalized(p, *NORMALIZATION["cifar100"]),
        _normalized(p, *SUPCONTRAST["cifar100"]),
    )
    mean, std = (0.3, 0.4, 0.5), (0.2, 0.25, 0.3)
    model, meta, _ = _import(
        capsys,
        files["cifar10"],
        tmp_path / "b",
        "--input-norm",
        "0.3, 0.4, 0.5/0.2, 0.25, 0.3",
        "--data",
        "cifar10-jpeg",
    )
    assert (meta["input_norm"]["mean"], meta["input_norm"]["std"]) == (list(mean), list(std))
    _assert_reproduces(
        model,
        net,
        cls,
        _normalized(p, *NORMALIZATION["cifar10-jpeg"]),
        _normalized(p, mean, std),
    )


def test_same_statistics_need_no_correction(supcon, tmp_path, capsys):
    *_, files = supcon
    stats = "/".join(",".join(map(str, v)) for v in NORMALIZATION["cifar10"])
    model, meta, stdout = _import(
        capsys, files["absent"], tmp_path / "t", "--input-norm", stats, "--data", "cifar10"
    )
    assert meta["input_affine"] is None and "input_affine" not in model.spec
    assert "no correction needed" in stdout


def test_torchvision_weights_default_to_imagenet_and_convert_to_cifar(tmp_path, capsys):
    torch.manual_seed(4)
    tv = torchvision.models.resnet18(num_classes=10)
    randomize_bn(tv, seed=5)
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    code, _, err = _cli(capsys, str(tmp_path / "tv.pth"), "--out", str(tmp_path / "a"))
    assert code == 0, err
    assert "input_affine" not in load_model(tmp_path / "a").spec  # imagefolder = ImageNet stats
    argv = [str(tmp_path / "tv.pth"), "--data", "cifar10", "--out", str(tmp_path / "b")]
    code, _, err = _cli(capsys, *argv)
    assert code == 0, err
    model = load_model(tmp_path / "b")
    p = _pixels(size=64)
    x_t = _normalized(p, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    with torch.no_grad():
        out = model(_normalized(p, *NORMALIZATION["cifar10"])).logits
        torch.testing.assert_close(out, tv.eval()(x_t), rtol=0, atol=TOL)


def test_reimported_run_keeps_and_composes_its_correction(supcon, tmp_path, capsys):
    net, cls, _, files = supcon
    first, _, _ = _import(capsys, files["cifar10"], tmp_path / "t1")
    # a supkd run as the source: auto keeps its correction as it is
    code, stdout, err = _cli(capsys, str(tmp_path / "t1"), "--out", str(tmp_path / "t2"))
    assert code == 0, err
    again = load_model(tmp_path / "t2")
    assert again.spec["input_affine"] == first.spec["input_affine"] and "keeps" in stdout
    # re-targeted: the run expects supkd's cifar10 normalization; distill it on cifar100
    stats = "/".join(",".join(map(str, v)) for v in NORMALIZATION["cifar10"])
    argv = [str(tmp_path / "t1"), "--input-norm", stats, "--data", "cifar100"]
    code, _, err = _cli(capsys, *argv, "--out", str(tmp_path / "t3"))
    assert code == 0, err
    p = _pixels()
    _assert_reproduces(
        load_model(tmp_path / "t3"),
        net,
        cls,
        _normalized(p, *NORMALIZATION["cifar100"]),
        _normalized(p, *SUPCONTRAST["cifar10"]),
    )


def test_library_api_takes_a_mean_std_pair(supcon):
    net, cls, d, files = supcon
    mean, std = SUPCONTRAST["cifar10"]
    imp = import_teacher(
        files["absent"], classifier=d / "cls.pth", input_norm=(mean, std), data="cifar10"
    )
    assert imp.data == "cifar10" and imp.input_affine == imp.model.spec["input_affine"]
    assert INPUT_NORMS["supcontrast-cifar10"] == (mean, std)
    p = _pixels()
    _assert_reproduces(
        imp.model, net, cls, _normalized(p, *NORMALIZATION["cifar10"]), _normalized(p, mean, std)
    )
    with pytest.raises(UserError, match="--input-norm"):
        import_teacher(files["absent"], input_norm="cifar10")
    with pytest.raises(UserError, match="--data"):
        import_teacher(files["absent"], input_norm=(mean, std), data="svhn")


# ---- bad values: exit 2, one line naming the flag (or the file), nothing written ----------


@pytest.mark.parametrize(
    ("source", "flags", "needles"),
    [
        ("cifar10", ["--input-norm", "cifar10"], ["--input-norm", "supcontrast-cifar10"]),
        ("cifar10", ["--input-norm", "0.5,0.5,0.5"], ["--input-norm", "m1,m2,m3/s1,s2,s3"]),
        ("cifar10", ["--input-norm", "a,b,c/1,1,1"], ["--input-norm", "'a,b,c/1,1,1'"]),
        ("cifar10", ["--input-norm", "0.5,0.5/0.5,0.5,0.5"], ["--input-norm", "2 and 3"]),
        ("cifar10", ["--input-norm", "0.5,0.5,0.5/0.5,0,0.5"], ["--input-norm", "> 0"]),
        ("cifar10", ["--input-norm", "0.5,0.5,0.5/0.5,-1,0.5"], ["--input-norm", "> 0"]),
        ("cifar10", ["--input-norm", "0.5,nan,0.5/0.5,0.5,0.5"], ["--input-norm", "finite"]),
        ("cifar10", ["--input-norm", "0.5,0.5,,0.5/1,1,1,1"], ["--input-norm"]),
        (
            "cifar10",
            ["--input-norm", "0.5,0.5/0.5,0.5", "--data", "cifar10"],
            ["--input-norm", "2 values", "3-channel"],
        ),
        ("cifar10", ["--data", "mnist"], ["--data", "cifar10", "imagefolder", "'mnist'"]),
        ("cifar10", ["--input-norm", "0.5,0.5,0.5/0.2,0.2,0.2"], ["--data", "needed"]),
        ("path", [], ["--data", "needed", "opt.dataset=path"]),
        ("absent", [], ["absent.pth", "no opt.dataset", "--input-norm"]),
        ("unknown", [], ["unknown.pth", "'svhn'", "--input-norm"]),
        ("bad_mean", ["--data", "cifar10"], ["bad.pth", "opt.mean", "'mean!'"]),
    ],
)
def test_bad_values_exit_2_with_one_line(supcon, tmp_path, capsys, source, flags, needles):
    _, _, d, files = supcon
    out = tmp_path / "t"
    argv = [str(files[source]), "--classifier", str(d / "cls.pth"), "--out", str(out), *flags]
    code, _, err = _cli(capsys, *argv)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert not (out / "model.pt").exists()
