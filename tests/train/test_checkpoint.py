"""model.pt / last.pt: loading from a run directory or a file, and every bad file."""

from __future__ import annotations

import pytest
import torch

from supkd.errors import CheckpointError
from supkd.models import create_model
from supkd.train.checkpoint import (
    load_model,
    load_model_record,
    save_checkpoint,
    save_model,
)


def _net(width: int = 4):
    return create_model("resnet18", num_classes=3, width=width, in_channels=1)


def test_save_and_load_model_in_all_three_forms(tmp_path):
    net = _net()
    save_model(tmp_path / "run" / "model.pt", net, {"task": "ce", "trained": ["encoder"]})
    save_checkpoint(
        tmp_path / "run" / "checkpoints" / "last.pt",
        {"model": net.state_dict(), "spec": net.spec, "info": {"task": "ce"}},
    )
    x = torch.randn(2, 1, 8, 8)
    net.eval()
    ref = net(x).logits
    for src in (tmp_path / "run", tmp_path / "run" / "model.pt",
                tmp_path / "run" / "checkpoints" / "last.pt"):
        got = load_model(src)
        assert not got.training
        assert torch.equal(got(x).logits, ref)
    rec = load_model_record(tmp_path / "run")
    assert rec.info["task"] == "ce" and rec.trained_parts == {"encoder"}
    assert rec.run_dir == tmp_path / "run"


def test_bad_model_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "missing.pt")
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(CheckpointError, match=r"has no model\.pt"):
        load_model(tmp_path / "empty_run")
    good = tmp_path / "good.pt"
    save_model(good, _net(), {})
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_model(trunc)
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": _net().state_dict()}, foreign)
    with pytest.raises(CheckpointError, match="import-teacher"):
        load_model(foreign)
    wrong = tmp_path / "wrong.pt"
    obj = torch.load(good, weights_only=True)
    obj["spec"]["width"] = 8  # weights of a width-4 network under a width-8 spec
    torch.save(obj, wrong)
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_model(wrong)
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": "supkd-model", "obj": object()}, pickled)
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_model(pickled)
