"""``train.wandb``: W&B as an opt-in logger, tested in offline mode with no network. The
offline run's transaction log (``run-<id>.wandb``) is read back record by record: the run's
config and every metrics.jsonl line must be in it."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path
from typing import Any

import pytest
from tests import helpers

from supkd.config import WandbConfig
from supkd.errors import ConfigError
from supkd.train import TrainingInterrupted, run
from supkd.train.checks import load_run_config
from supkd.train.loggers import WANDB_ID_FILE, WandbLogger

wandb = pytest.importorskip("wandb")

TINY = [*helpers.TINY, "data.subset=48", "train.batch_size=16", "train.epochs=2",
        "train.wandb.project=supkd-test", "train.wandb.mode=offline"]


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """wandb with nothing outside tmp_path and no way to reach a server."""
    for var in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_CODE", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    # Any connection attempt would go to a closed local port and fail at once.
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")


def read_wandb_log(path: Path) -> list[Any]:
    """The protobuf records of a ``.wandb`` file: a LevelDB-style log (7-byte ``:W&B``
    header, 32 KiB blocks of chunks ``crc32 (4) | length (2) | type (1) | data``, type 1 a
    whole record, 2/3/4 its first/middle/last part). wandb 0.31 ships no Python reader."""
    from wandb.proto import wandb_internal_pb2 as pb

    raw = path.read_bytes()
    assert raw[:4] == b":W&B"
    block, pos, parts, out = 32768, 7, b"", []
    while pos + 7 <= len(raw):
        left = block - pos % block
        if left < 7:  # the block's tail is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        data = raw[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0:
            pos += block - pos % block if pos % block else 0
            continue
        parts = data if kind in (1, 2) else parts + data
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(parts)
            out.append(record)
    return out


def _offline_run(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]], list[Path]]:
    """(config, history rows, .wandb files) of the W&B run(s) in ``run_dir/wandb``."""
    files = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert files, sorted(p.name for p in (run_dir / "wandb").iterdir())
    config: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    for f in files:
        for r in read_wandb_log(f):
            kind = r.WhichOneof("record_type")
            if kind == "run":
                config.update({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                               for i in r.run.config.update})
            elif kind == "history":
                rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                             for i in r.history.item})
    return config, rows, files


@pytest.mark.slow
def test_an_offline_run_holds_the_config_and_every_metrics_line(tmp_path):
    cfg = load_run_config({"name": "wb"}, TINY)
    out = tmp_path / "run"
    assert run(cfg, out, quiet=True)["status"] == "completed"
    config, rows, files = _offline_run(out)
    run_id = (out / "wandb" / WANDB_ID_FILE).read_text().strip()
    assert len(files) == 1 and files[0].name == f"run-{run_id}.wandb"
    resolved = cfg.to_dict()
    assert {k: config[k] for k in resolved} == resolved
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["_step"] for r in rows] == [line["step"] for line in lines]
    for row, line in zip(rows, lines):
        for key, value in line.items():
            if key != "step" and isinstance(value, int | float):
                assert row[key] == pytest.approx(value), key


@pytest.mark.slow
def test_a_resumed_run_continues_its_wandb_run(tmp_path):
    cfg = load_run_config({"name": "wb"}, TINY)
    out = tmp_path / "run"

    def stop_after_first_epoch(state):
        state.stop = state.epoch >= 1

    with pytest.raises(TrainingInterrupted):
        run(cfg, out, quiet=True, callbacks=[stop_after_first_epoch])
    run_id = (out / "wandb" / WANDB_ID_FILE).read_text().strip()
    assert run(cfg, out, resume=True, quiet=True)["status"] == "completed"
    assert (out / "wandb" / WANDB_ID_FILE).read_text().strip() == run_id
    _, rows, files = _offline_run(out)
    assert {f.name for f in files} == {f"run-{run_id}.wandb"}  # one W&B run, two sessions
    epochs = sorted({r["epoch"] for r in rows})
    assert epochs == [1, 2]


def test_off_unless_a_project_is_named(tmp_path):
    for cfg in (WandbConfig(), WandbConfig(project="p", mode="disabled")):
        logger = WandbLogger(cfg, tmp_path / "wandb", config={})
        assert logger.run is None
        logger.log({"step": 1, "loss": 1.0})
        logger.close()
    assert not (tmp_path / "wandb").exists()
    # Rank > 0 never logs.
    assert WandbLogger(WandbConfig(project="p"), tmp_path / "w", config={},
                       enabled=False).run is None


def test_without_wandb_it_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    with pytest.raises(ConfigError) as info:
        WandbLogger(WandbConfig(project="p", mode="offline"), tmp_path / "wandb", config={})
    assert str(info.value) == ("config field 'train.wandb.project': logging to W&B needs the "
                               "wandb package: pip install 'supkd[wandb]'")


def test_bad_wandb_fields_are_config_errors():
    with pytest.raises(ConfigError, match=r"train\.wandb\.mode"):
        load_run_config({}, ["train.wandb.mode=sometimes"])
    with pytest.raises(ConfigError, match=r"did you mean 'train\.wandb\.project'"):
        load_run_config({}, ["train.wandb.projct=x"])
