"""Tests of ``supkd cka`` on run directories (model.pt + config.yaml as the engine writes them).

The runs are built directly with ``save_model`` and a config.yaml so the test needs no
training; the files have the engine's layout (docs/architecture.md).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from supkd.analysis.layerwise import layerwise_cka
from supkd.cli import main
from supkd.data import DataConfig, build_data, make_loader
from supkd.models import create_model
from supkd.train.checkpoint import save_model
from supkd.utils.atomic import atomic_write_yaml

DATA = {"name": "digits", "subset": 48, "val_fraction": 0.1, "num_workers": 0}
STAGES = ["stem", "layer1", "layer2", "layer3", "layer4", "embedding", "logits"]


def _make_run(root: Path, name: str, seed: int, width: int, task: dict[str, Any],
              meta: dict[str, Any] | None = None) -> Path:
    torch.manual_seed(seed)
    model = create_model("resnet18", stem="cifar", num_classes=10, width=width, in_channels=1)
    run_dir = root / name
    save_model(run_dir / "model.pt", model, {"task": task["name"]})
    atomic_write_yaml(run_dir / "config.yaml", {
        "name": name, "seed": seed, "meta": meta or {}, "data": dict(DATA),
        "model": {"name": "resnet18", "width": width}, "task": task,
    })
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    teacher = _make_run(root, "teacher", 0, 4, {"name": "ce"})
    kd = {"name": "distill", "teacher": str(teacher)}
    return {
        "teacher": teacher,
        "a0": _make_run(root, "kd_a_s0", 1, 2, {**kd, "loss": "cosine"}, {"method": "alpha"}),
        "a1": _make_run(root, "kd_a_s1", 2, 2, {**kd, "loss": "cosine"}, {"method": "alpha"}),
        "b0": _make_run(root, "kd_b_s0", 3, 2, {**kd, "loss": "gram"}),
    }


def _expected(teacher: Path, student: Path, batch_size: int, batches: int):
    from supkd.train.checkpoint import load_model

    bundle = build_data(DataConfig(**DATA), seed=0)
    loader = make_loader(bundle, "test", batch_size, train=True, augment="none",
                         device="cpu", seed=0, drop_last=False)
    return layerwise_cka(load_model(teacher), load_model(student), loader, max_batches=batches)


def test_single_student_writes_json_and_png(runs: dict[str, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    rc = main(["cka", "--teacher", str(runs["teacher"]), "--student", str(runs["a0"]),
               "--batch-size", "8", "--batches", "2", "--out", str(out)])
    assert rc == 0
    data = json.loads((out / "cka.json").read_text())
    want = _expected(runs["teacher"], runs["a0"], 8, 2)
    assert data["data"]["num_samples"] == want.num_samples == 16
    assert data["teacher_stages"] == STAGES
    (entry,) = data["students"]
    assert entry["method"] == "alpha" and entry["seed"] == 1 and entry["name"] == "kd_a_s0"
    np.testing.assert_allclose(entry["matrix"], want.matrix.numpy(), rtol=0, atol=1e-12)
    assert all(v == pytest.approx(1.0, abs=1e-9) for v in data["sanity"].values())
    assert (out / entry["heatmap"]).read_bytes()[:4] == b"\x89PNG"
    assert (out / "cka_per_stage.png").is_file()
    assert data["per_stage"]["methods"]["alpha"]["std"] == [None] * 7  # n = 1: undefined
    assert "kd_a_s0" in capsys.readouterr().out


def test_students_grouped_by_method_mean_and_sample_std(runs: dict[str, Path],
                                                        tmp_path: Path) -> None:
    out = tmp_path / "many"
    rc = main(["cka", "--teacher", str(runs["teacher"]), "--students", str(runs["a0"]),
               str(runs["a1"]), str(runs["b0"]), "--batch-size", "8", "--batches", "2",
               "--out", str(out), "--pool"])
    assert rc == 0
    data = json.loads((out / "cka.json").read_text())
    assert data["data"]["num_samples"] == 16 and data["pool"] is True
    methods = data["per_stage"]["methods"]
    # meta.method wins over task.loss; without meta.method the loss names the method.
    assert set(methods) == {"alpha", "gram"}
    assert methods["alpha"]["n"] == 2 and methods["gram"]["n"] == 1
    diag = {e["name"]: e["diagonal"] for e in data["students"]}
    for i, s in enumerate(data["per_stage"]["stages"]):
        pair = [diag["kd_a_s0"][s], diag["kd_a_s1"][s]]
        assert methods["alpha"]["mean"][i] == pytest.approx(sum(pair) / 2, abs=1e-12)
        assert methods["alpha"]["std"][i] == pytest.approx(abs(pair[0] - pair[1]) / math.sqrt(2),
                                                           abs=1e-12)
        assert methods["gram"]["mean"][i] == pytest.approx(diag["kd_b_s0"][s], abs=1e-12)
    assert sorted(p.name for p in out.glob("*.png")) == [
        "cka_per_stage.png", "heatmap_kd_a_s0.png", "heatmap_kd_a_s1.png", "heatmap_kd_b_s0.png"
    ]


def test_default_out_is_teacher_run_dir_and_bare_model_file_needs_data(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["cka", "--teacher", str(runs["teacher"]), "--student", str(runs["b0"] / "model.pt"),
               "--batch-size", "8", "--batches", "1", "--stages", "layer1,embedding"])
    assert rc == 0
    data = json.loads((runs["teacher"] / "cka" / "cka.json").read_text())
    assert data["teacher_stages"] == ["layer1", "embedding"]
    assert data["students"][0]["stages"] == ["layer1", "embedding"]
    # A model file outside any run directory: no config, so the data set must be named.
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "t.pt").write_bytes((runs["teacher"] / "model.pt").read_bytes())
    (bare / "s.pt").write_bytes((runs["b0"] / "model.pt").read_bytes())
    capsys.readouterr()
    rc = main(["cka", "--teacher", str(bare / "t.pt"), "--student", str(bare / "s.pt"),
               "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("supkd cka: error:") and "--data" in err and "\n" not in err
    rc = main(["cka", "--teacher", str(bare / "t.pt"), "--student", str(bare / "s.pt"),
               "--out", str(tmp_path / "o"), "--data", "digits", "--batches", "1",
               "--batch-size", "8"])
    assert rc == 0 and (tmp_path / "o" / "cka.json").is_file()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--batch-size", "3"], "--batch-size"),
        (["--batches", "0"], "--batches"),
        (["--stages", "layer9"], "layer9"),
        (["--device", "tpu"], "--device"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(runs: dict[str, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str],
                                            extra: list[str], needle: str) -> None:
    rc = main(["cka", "--teacher", str(runs["teacher"]), "--student", str(runs["a0"]),
               "--out", str(tmp_path / "x"), "--batch-size", "8", "--batches", "1", *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and needle in err and "\n" not in err
    assert not (tmp_path / "x" / "cka.json").exists()


def test_missing_teacher_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["cka", "--teacher", str(tmp_path / "nope"), "--student", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "nope" in err and "\n" not in err


def test_missing_data_exits_2(runs: dict[str, Path], tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["cka", "--teacher", str(runs["teacher"]), "--student", str(runs["a0"]),
               "--data", "cifar10-jpeg", "--data-root", str(tmp_path), "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and str(tmp_path) in err and "\n" not in err


def test_wrong_channel_count_exits_2(runs: dict[str, Path], tmp_path: Path, cifar10_jpeg_dir: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    # The runs take 1-channel digits; CIFAR-10 images have 3 channels.
    rc = main(["cka", "--teacher", str(runs["teacher"]), "--student", str(runs["a0"]),
               "--data", "cifar10-jpeg", "--data-root", str(cifar10_jpeg_dir),
               "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "1-channel" in err and "\n" not in err


def test_grid_job_and_cli_write_the_one_cka_record(runs: dict[str, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """`supkd cka` and the grid's CKA job write one schema (supkd.train.cka_record), both
    through RunDir.write_cka, and the report's reader takes either."""
    from supkd.experiments.grid.jobs import cka_job
    from supkd.train.cka_record import CkaRecord

    out = tmp_path / "cli"
    assert main(["cka", "--teacher", str(runs["teacher"]), "--student", str(runs["a0"]),
                 "--out", str(out), "--batch-size", "16"]) == 0
    capsys.readouterr()
    grid_dir = tmp_path / "grid"
    res = cka_job({"student": str(runs["a0"]), "teacher": str(runs["teacher"]),
                   "batch_size": 16}, grid_dir, False)
    assert res["status"] == "completed"
    cli = json.loads((out / "cka.json").read_text())
    grid = json.loads((grid_dir / "cka.json").read_text())
    assert set(cli) == set(grid)
    assert set(cli["data"]) == set(grid["data"])
    assert set(cli["students"][0]) == set(grid["students"][0])
    assert cli["teacher_stages"] == grid["teacher_stages"] == STAGES
    assert grid["teacher"]["path"] == str(runs["teacher"])
    assert grid["students"][0]["path"] == str(runs["a0"])
    assert grid["students"][0]["method"] == cli["students"][0]["method"] == "alpha"
    assert grid["students"][0]["heatmap"] is None
    assert cli["students"][0]["heatmap"] == f"heatmap_{cli['students'][0]['key']}.png"
    assert grid["meta"] == {"method": "alpha"} and cli["meta"] == {}
    for doc in (cli, grid):
        rec = CkaRecord.from_dict(doc)
        assert set(rec.diagonal()) == set(STAGES)  # JSON keys are sorted on disk
        assert all(abs(v - 1.0) < 1e-6 for v in rec.sanity.values())
