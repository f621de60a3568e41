"""The StrEnum vocabularies (supkd.vocab): each member is its old word, so files written
before them read the same, and records written with them hold plain words."""

from __future__ import annotations

import json

import pytest
import yaml

from supkd.train.run_dir import FINAL_STATUSES, RunResult
from supkd.vocab import GridState, JobStatus, RunKind, RunState, RunStatus, Stage


def test_members_are_their_words():
    assert RunStatus.COMPLETED == "completed" and RunStatus.DIVERGED == "diverged"
    assert {s.value for s in RunStatus} == {"completed", "diverged", "failed", "imported"}
    assert [s.value for s in Stage] == ["final", "tune"]
    assert RunKind("cka") is RunKind.CKA and RunState("resume") is RunState.RESUME
    assert GridState.NOT_STARTED == "not started"
    assert json.dumps({"s": RunStatus.FAILED}) == '{"s": "failed"}'
    assert f"{Stage.TUNE}" == "tune" and str(JobStatus.CACHED) == "cached"


def test_every_run_status_is_a_job_status_and_a_final_status():
    for s in RunStatus:
        assert JobStatus(s.value) == s and s.value in FINAL_STATUSES
    assert all(type(s) is str for s in FINAL_STATUSES)
    assert RunStatus.COMPLETED.usable and RunStatus.IMPORTED.usable
    assert not RunStatus.DIVERGED.usable and RunStatus.DIVERGED.finished
    assert not RunStatus.FAILED.finished


def test_a_run_result_reads_a_word_and_writes_a_word():
    res = RunResult("completed", test_acc=50.0)
    assert res.status is RunStatus.COMPLETED
    plain = res.to_dict()
    assert type(plain["status"]) is str
    yaml.safe_dump(plain)  # a plain record: any writer takes it
    assert RunResult.from_dict({**plain, "not_a_field": 1}) == res
    assert res["test_acc"] == 50.0 and res.get("val_acc", 1) is None and res.get("x", 2) == 2
    with pytest.raises(KeyError):
        res["x"]
    with pytest.raises(ValueError, match="result status must be one of"):
        RunResult("skipped")
