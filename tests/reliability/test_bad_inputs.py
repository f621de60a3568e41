"""The bad-input catalogue (docs/design.md §8, issue 8): every user error gets a clear answer.

Each case feeds one broken input to the public API or the CLI and checks
- the API raises the documented type (ConfigError / DataError / CheckpointError for
  CLI-facing code, ValueError for library arguments) and the CLI exits with code 2;
- the message is one line and names the field or the file;
- no traceback reaches stderr.

Inputs are generated in tmp_path; nothing here trains for more than a couple of steps.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from catalogue import TINY, write_cfg

from supkd.cli import main
from supkd.errors import CheckpointError, ConfigError, DataError, UserError
from supkd.utils import atomic

REPO = Path(__file__).resolve().parents[2]


def _one_line(msg: str) -> str:
    assert "\n" not in msg.strip(), f"message is not one line: {msg!r}"
    return msg


def _raises(exc_type: type[BaseException], fn, *needles: str) -> str:
    with pytest.raises(exc_type) as info:
        fn()
    msg = _one_line(str(info.value))
    for n in needles:
        assert n in msg, f"{n!r} not named in {msg!r}"
    return msg


def _cli(capsys, argv: list[str], *needles: str) -> str:
    """Run ``supkd ARGV`` in process; expect exit 2 and one stderr line naming ``needles``."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, f"exit {code}, stderr {err!r}"
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], f"{n!r} not named in {lines[0]!r}"
    return lines[0]


# =========================================================================== config (API)
def _load(*overrides: str, base: dict | None = None):
    from supkd.train.checks import load_run_config

    return load_run_config(base if base is not None else TINY, list(overrides))


def test_config_unknown_key_suggests_the_closest():
    _raises(ConfigError, lambda: _load("optim.lrr=0.1"), "optim.lrr", "optim.lr")


def test_config_unknown_section():
    _raises(ConfigError, lambda: _load("optimizer.lr=0.1"), "optimizer")


def test_config_wrong_type():
    _raises(ConfigError, lambda: _load("optim.lr=fast"), "optim.lr", "number")


def test_config_wrong_type_bool():
    _raises(ConfigError, lambda: _load("deterministic=maybe"), "deterministic")


@pytest.mark.parametrize("value", ["0", "-1"])
def test_config_lr_not_positive(value):
    _raises(ConfigError, lambda: _load(f"optim.lr={value}"), "optim.lr", "> 0")


def test_config_epochs_zero():
    _raises(ConfigError, lambda: _load("train.epochs=0"), "train.epochs")


@pytest.mark.parametrize("value", ["0", "-0.1"])
def test_config_supcon_temperature_not_positive(value):
    _raises(
        ConfigError,
        lambda: _load("task.name=supcon", f"task.temperature={value}"),
        "task.temperature",
    )


def test_config_kd_temperature_not_positive():
    _raises(
        ConfigError,
        lambda: _load(
            "task.name=distill",
            "task.teacher=t",
            "task.loss=supcon_kd",
            "task.loss_args.temperature=0",
        ),
        "task.loss_args",
        "temperature",
    )


def test_config_alpha_negative():
    _raises(
        ConfigError,
        lambda: _load("task.name=distill", "task.teacher=t", "task.alpha=-1"),
        "task.alpha",
    )


def test_config_unknown_loss_lists_valid_names():
    msg = _raises(
        ConfigError,
        lambda: _load("task.name=distill", "task.teacher=t", "task.loss=supcon_kdd"),
        "task.loss",
    )
    assert "supcon_kd" in msg


def test_config_unknown_task():
    _raises(ConfigError, lambda: _load("task.name=distil"), "task.name", "distill")


def test_config_unknown_data_set():
    _raises(ConfigError, lambda: _load("data.name=mnist"), "data.name", "digits")


def test_config_bad_device():
    _raises(ConfigError, lambda: _load("device=gpu0"), "device")


def test_config_override_without_equals():
    _raises(ConfigError, lambda: _load("optim.lr"), "optim.lr", "KEY=VALUE")


def test_config_file_missing(tmp_path):
    from supkd.train.checks import load_run_config

    _raises(ConfigError, lambda: load_run_config(tmp_path / "nope.yaml"), "nope.yaml")


def test_config_file_not_yaml(tmp_path):
    from supkd.train.checks import load_run_config

    bad = tmp_path / "broken.yaml"
    bad.write_text("optim:\n  lr: [0.1\n")
    _raises(ConfigError, lambda: load_run_config(bad), "broken.yaml", "line")


def test_config_file_not_a_mapping(tmp_path):
    from supkd.train.checks import load_run_config

    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    _raises(ConfigError, lambda: load_run_config(bad), "list.yaml", "mapping")


# ============================================================================= data (API)
def _build(**data):
    from supkd.config import DataConfig
    from supkd.data import build_data

    return build_data(DataConfig(**data), seed=0)


def _read_all(bundle) -> None:
    for split in (bundle.train, bundle.val, bundle.test):
        if split is not None:
            for i in range(len(split)):
                split[i]


def _png(path: Path, value: int = 0) -> None:
    from torchvision.io import write_png

    write_png(torch.full((3, 8, 8), value, dtype=torch.uint8), str(path))


def _jpeg_bytes(seed: int = 0) -> bytes:
    from torchvision.io import encode_jpeg

    g = torch.Generator().manual_seed(seed)
    return (
        encode_jpeg(torch.randint(0, 256, (3, 8, 8), generator=g, dtype=torch.uint8))
        .numpy()
        .tobytes()
    )


def _tree(root: Path, classes=("a", "b"), per_class: int = 5) -> Path:
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (root / c / f"{i}.jpg").write_bytes(_jpeg_bytes(i))
    return root


def test_data_missing_folder(tmp_path):
    _raises(DataError, lambda: _build(name="imagefolder", root=str(tmp_path / "gone")), "gone")


def test_data_root_required(tmp_path):
    _raises(DataError, lambda: _build(name="imagefolder"), "data.root")


def test_data_no_class_folders(tmp_path):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "x.jpg").write_bytes(_jpeg_bytes())
    _raises(DataError, lambda: _build(name="imagefolder", root=str(tmp_path / "flat")), "flat")


def test_data_empty_class_folder(tmp_path):
    root = _tree(tmp_path / "tree")
    (root / "c_empty").mkdir()
    _raises(DataError, lambda: _build(name="imagefolder", root=str(root)), "c_empty")


def test_data_zero_byte_image(tmp_path):
    root = _tree(tmp_path / "tree")
    (root / "b" / "zero.jpg").write_bytes(b"")
    _raises(DataError, lambda: _build(name="imagefolder", root=str(root)), "zero.jpg", "empty")


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_data_corrupt_image_named_when_read(tmp_path, kind):
    root = _tree(tmp_path / "tree")
    data = b"this is not an image" * 10 if kind == "garbage" else _jpeg_bytes(9)[:150]
    (root / "a" / f"{kind}.jpg").write_bytes(data)
    bundle = _build(name="imagefolder", root=str(root), val_fraction=0.0, image_size=8)
    _raises(DataError, lambda: _read_all(bundle), f"{kind}.jpg")


def _pack(folder: Path, *, drop: str | None = None, labels=None, n: int = 6, corrupt=None) -> Path:
    """A cifar10-jpeg style pack (format: docs/design.md §6)."""
    folder.mkdir(parents=True, exist_ok=True)
    blobs = [_jpeg_bytes(i) for i in range(n)]
    if corrupt is not None:
        blobs[corrupt] = b"\xff\xd8" + b"\x00" * 40
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    arrays = {
        "jpeg": np.frombuffer(b"".join(blobs), dtype=np.uint8),
        "offsets": offsets,
        "labels": np.asarray(labels if labels is not None else [i % 2 for i in range(n)], np.uint8),
        "classes": np.asarray(["cat", "dog"]),
    }
    for split in ("train", "test"):
        np.savez(folder / f"{split}.npz", **{k: v for k, v in arrays.items() if k != drop})
    return folder


def test_npz_missing_array(tmp_path):
    root = _pack(tmp_path / "pack", drop="offsets")
    _raises(DataError, lambda: _build(name="cifar10-jpeg", root=str(root)), "train.npz", "offsets")


def test_npz_labels_out_of_range(tmp_path):
    root = _pack(tmp_path / "pack", labels=[0, 1, 0, 7, 1, 0])
    _raises(
        DataError, lambda: _build(name="cifar10-jpeg", root=str(root)), "train.npz", "out of range"
    )


def test_npz_corrupt_image_inside(tmp_path):
    root = _pack(tmp_path / "pack", corrupt=3)
    _raises(
        DataError,
        lambda: _read_all(_build(name="cifar10-jpeg", root=str(root), val_fraction=0.0)),
        "npz",
        "image 3",
    )


def test_npz_not_an_npz(tmp_path):
    (tmp_path / "pack").mkdir()
    for split in ("train", "test"):
        (tmp_path / "pack" / f"{split}.npz").write_bytes(b"PK\x03\x04 truncated zip")
    _raises(
        DataError, lambda: _build(name="cifar10-jpeg", root=str(tmp_path / "pack")), "train.npz"
    )


def test_npz_folder_missing(tmp_path):
    _raises(DataError, lambda: _build(name="cifar10-jpeg", root=str(tmp_path / "none")), "none")


# ====================================================================== checkpoints (API)
@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory) -> Path:
    from supkd.models import create_model
    from supkd.train.checkpoint import save_model

    d = tmp_path_factory.mktemp("run")
    net = create_model("resnet18", num_classes=10, width=4, in_channels=1)
    save_model(d / "model.pt", net, {"task": "ce", "trained": ["encoder", "classifier"]})
    (d / "config.yaml").write_text(yaml.safe_dump(TINY))
    return d / "model.pt"


def _load_model(path):
    from supkd.train.checkpoint import load_model

    return load_model(path)


@pytest.mark.parametrize("frac", [0.0, 0.5, 0.99])
def test_checkpoint_truncated_or_empty(tiny_model_file, tmp_path, frac):
    data = tiny_model_file.read_bytes()
    bad = tmp_path / "model.pt"
    bad.write_bytes(data[: int(len(data) * frac)])
    _raises(CheckpointError, lambda: _load_model(bad), "model.pt")


def test_checkpoint_of_another_architecture(tiny_model_file, tmp_path):
    # A resnet34 spec with resnet18 weights: what a hand-edited or mixed-up file looks like.
    obj = torch.load(tiny_model_file, weights_only=True)
    obj["spec"] = dict(obj["spec"], name="resnet34")
    torch.save(obj, tmp_path / "model.pt")
    _raises(CheckpointError, lambda: _load_model(tmp_path / "model.pt"), "model.pt", "layer")


def test_checkpoint_foreign_file_points_to_import_teacher(tmp_path):
    import torchvision

    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), tmp_path / "tv.pth")
    _raises(CheckpointError, lambda: _load_model(tmp_path / "tv.pth"), "tv.pth", "import-teacher")


def test_checkpoint_run_dir_without_model(tmp_path):
    (tmp_path / "run").mkdir()
    _raises(CheckpointError, lambda: _load_model(tmp_path / "run"), "run")


def test_checkpoint_text_file(tmp_path):
    (tmp_path / "model.pt").write_text("not a model\n")
    _raises(CheckpointError, lambda: _load_model(tmp_path / "model.pt"), "model.pt")


# ============================================================================ losses (API)
def test_loss_unknown_name_lists_valid():
    from supkd.losses import build_loss

    _raises(ValueError, lambda: build_loss("supcon-kd"), "supcon-kd", "supcon_kd", "logit_mse")


@pytest.mark.parametrize("name", ["supcon_kd", "hinton_kl"])
@pytest.mark.parametrize("value", [0.0, -1.0, float("nan")])
def test_loss_temperature_not_positive(name, value):
    from supkd.losses import build_loss

    _raises(ValueError, lambda: build_loss(name, temperature=value), "temperature")


def test_loss_unknown_argument():
    from supkd.losses import build_loss

    _raises(ValueError, lambda: build_loss("cosine", temperature=0.1), "temperature")


def test_supcon_loss_temperature_not_positive():
    from supkd.losses import SupConLoss

    _raises(ValueError, lambda: SupConLoss(temperature=0), "temperature")


def test_loss_batch_sizes_differ():
    from supkd.losses import build_loss

    loss = build_loss("logit_mse")
    _raises(ValueError, lambda: loss(torch.zeros(4, 3), torch.zeros(5, 3)), "(4, 3)", "(5, 3)")


def test_loss_labels_wrong_shape():
    from supkd.losses import build_loss

    loss = build_loss("supcon_kd")
    _raises(
        ValueError,
        lambda: loss(torch.randn(4, 3), torch.randn(4, 3), torch.zeros(3, dtype=torch.long)),
        "labels",
    )


def test_supcon_loss_wrong_rank():
    from supkd.losses import SupConLoss

    _raises(ValueError, lambda: SupConLoss()(torch.randn(4, 8)), "features", "(B, V, D)")


# ============================================================================ atomic writes
def _no_temp_files(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_atomic_write_failing_at_rename_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "result.json"
    atomic.atomic_write_json(target, {"v": 1})

    def full_disk(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", full_disk)
    with pytest.raises(OSError):
        atomic.atomic_write_json(target, {"v": 2})
    assert json.loads(target.read_text()) == {"v": 1}
    assert _no_temp_files(tmp_path) == []


def test_atomic_write_failing_midway_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    atomic.atomic_torch_save({"step": 1}, target)

    def fsync_fails(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(atomic.os, "fsync", fsync_fails)
    with pytest.raises(OSError):
        atomic.atomic_torch_save({"step": 2, "w": torch.zeros(1000)}, target)
    assert torch.load(target, weights_only=True) == {"step": 1}
    assert _no_temp_files(tmp_path) == []


def test_atomic_torch_save_of_unsaveable_object_keeps_old_file(tmp_path):
    target = tmp_path / "model.pt"
    atomic.atomic_torch_save({"step": 1}, target)
    with pytest.raises(Exception):  # noqa: B017 - pickling error type varies by object
        atomic.atomic_torch_save({"fn": lambda: 0}, target)
    assert torch.load(target, weights_only=True) == {"step": 1}
    assert _no_temp_files(tmp_path) == []


def test_jsonl_truncated_last_line_is_skipped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    atomic.append_jsonl(path, {"epoch": 1})
    atomic.append_jsonl(path, {"epoch": 2})
    with open(path, "a") as fh:
        fh.write('{"epoch": 3, "te')  # a kill in the middle of an append
    assert atomic.read_jsonl(path) == [{"epoch": 1}, {"epoch": 2}]


# ===================================================================================== CLI
def test_cli_train_config_missing(tmp_path, capsys):
    _cli(
        capsys,
        ["train", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "r")],
        "missing.yaml",
    )


def test_cli_train_unknown_override(tmp_path, capsys):
    cfg = write_cfg(tmp_path / "c.yaml")
    _cli(capsys, ["train", str(cfg), "optim.lrr=0.1", "--out", str(tmp_path / "r")], "optim.lrr")


def test_cli_train_unknown_model(tmp_path, capsys):
    cfg = write_cfg(tmp_path / "c.yaml", model={"name": "resnet7"})
    _cli(capsys, ["train", str(cfg), "--out", str(tmp_path / "r")], "resnet7")


def test_cli_train_unwritable_output(tmp_path, capsys):
    # A path under a regular file can never be created (root ignores permission bits, so
    # chmod would not make a folder unwritable in CI containers).
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cfg = write_cfg(tmp_path / "c.yaml")
    _cli(capsys, ["train", str(cfg), "--out", str(blocker / "run")], str(blocker))


def test_cli_distill_teacher_missing(tmp_path, capsys):
    cfg = write_cfg(
        tmp_path / "c.yaml", task={"name": "distill", "teacher": str(tmp_path / "no_teacher")}
    )
    _cli(capsys, ["train", str(cfg), "--out", str(tmp_path / "r")], "no_teacher")


def test_cli_distill_teacher_truncated(tiny_model_file, tmp_path, capsys):
    bad = tmp_path / "teacher"
    bad.mkdir()
    (bad / "model.pt").write_bytes(tiny_model_file.read_bytes()[:500])
    cfg = write_cfg(tmp_path / "c.yaml", task={"name": "distill", "teacher": str(bad)})
    _cli(capsys, ["train", str(cfg), "--out", str(tmp_path / "r")], "model.pt")


def test_cli_train_into_existing_run_without_resume(tmp_path, capsys):
    cfg = write_cfg(tmp_path / "c.yaml")
    run_dir = tmp_path / "done_run"
    assert main(["train", str(cfg), "--out", str(run_dir), "--quiet"]) == 0
    capsys.readouterr()
    _cli(capsys, ["train", str(cfg), "--out", str(run_dir)], "done_run", "--resume")


def test_cli_resume_truncated_checkpoint(tmp_path, capsys):
    cfg = write_cfg(tmp_path / "c.yaml")
    run_dir = tmp_path / "r"
    assert main(["train", str(cfg), "--out", str(run_dir), "--quiet"]) == 0
    capsys.readouterr()
    last = run_dir / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    (run_dir / "result.json").unlink()
    _cli(capsys, ["train", str(cfg), "--out", str(run_dir), "--resume"], "last.pt")


def test_cli_resume_with_another_architecture(tmp_path, capsys):
    cfg = write_cfg(tmp_path / "c.yaml")
    run_dir = tmp_path / "r"
    assert main(["train", str(cfg), "--out", str(run_dir), "--quiet"]) == 0
    capsys.readouterr()
    (run_dir / "result.json").unlink()
    _cli(
        capsys,
        ["train", str(cfg), "model.name=resnet34", "--out", str(run_dir), "--resume"],
        "model.name",
    )


def test_cli_report_missing_folder(tmp_path, capsys):
    _cli(capsys, ["report", str(tmp_path / "no_runs")], "no_runs")


def test_cli_import_teacher_wrong_arch(tmp_path, capsys):
    import torchvision

    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), tmp_path / "r18.pth")
    _cli(
        capsys,
        [
            "import-teacher",
            str(tmp_path / "r18.pth"),
            "--arch",
            "resnet50",
            "--out",
            str(tmp_path / "t"),
        ],
        "r18.pth",
        "resnet50",
    )


@pytest.mark.slow
def test_cli_subprocess_user_error_has_no_traceback(tmp_path):
    """The real entry point (a fresh interpreter): exit 2, one line, no traceback."""
    cfg = write_cfg(tmp_path / "c.yaml")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "supkd",
            "train",
            str(cfg),
            "task.name=distill",
            "task.teacher=some/teacher",
            "task.alpha=-0.5",
            "--out",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "task.alpha" in lines[0], proc.stderr


def test_user_error_types_are_user_errors():
    # The CLI maps exactly these to exit 2; keep them in one family.
    for t in (ConfigError, DataError, CheckpointError):
        assert issubclass(t, UserError) and t.exit_code == 2


def test_cli_report_unwritable_output(tmp_path, capsys):
    (tmp_path / "runs" / "r").mkdir(parents=True)  # one (failed) run: a folder worth a report
    (tmp_path / "runs" / "r" / "result.json").write_text('{"status": "failed"}')
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _cli(capsys, ["report", str(tmp_path / "runs"), "--out", str(blocker / "rep")], str(blocker))


def test_cli_grid_spec_unknown_key(tmp_path, capsys):
    spec = tmp_path / "g.yaml"
    spec.write_text("grid: g\nrunz: {}\n")
    _cli(capsys, ["grid", str(spec), "--out", str(tmp_path / "o")], "runz")


def test_cli_import_teacher_pickled_object(tmp_path, capsys):
    # A checkpoint holding a whole pickled module: a safe (weights_only) load refuses it.
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "whole.pth")
    _cli(
        capsys,
        ["import-teacher", str(tmp_path / "whole.pth"), "--out", str(tmp_path / "t")],
        "whole.pth",
        "state_dict",
    )
