"""grid: expansion, dependency order, α tuning, skip/resume/retry, failures, --jobs."""

from __future__ import annotations

import io
import json
import signal
from pathlib import Path

import pytest

from supkd.errors import ConfigError
from supkd.experiments.grid import parse_grid, plan_grid, run_grid, spec_hash
from supkd.experiments.report import write_report

from .fakeengine import fake_cka, fake_run


def _spec(**extra):
    raw = {
        "grid": "t",
        "published": "cifar10",
        "seeds": [0, 1],
        "base": {"data": {"name": "digits"}, "task": {"acc": 80}},
        "final": {"config": {"data": {"val_fraction": 0.0}}},
        "tune": {"seeds": [0], "config": {"data": {"val_fraction": 0.2}}},
        "runs": {
            "teacher": {"config": {"task": {"name": "ce", "acc": 90}},
                        "meta": {"table": "table1", "role": "teacher", "kind": "ce"}},
            "kd_{method}": {
                "matrix": {"method": {"gram": {}, "cosine": {"config": {"task": {"acc": 85}}}}},
                "alphas": [0.1, 1.0, 10.0],
                "config": {"task": {"name": "distill", "teacher": "${run:teacher}",
                                    "loss": "${method}", "alpha": "${alpha}"}},
                "meta": {"table": "table2", "method": "${method}", "teacher_kind": "ce"},
            },
            "abl": {"alpha_from": "kd_gram",
                    "config": {"task": {"name": "distill", "teacher": "${run:teacher@0}",
                                        "alpha": "${alpha}"}},
                    "meta": {"table": "table5", "placement": "both"}},
        },
        "cka": {"teacher": "teacher", "students": ["kd_gram"]},
    }
    raw.update(extra)
    return parse_grid(raw)


@pytest.fixture()
def log(tmp_path, monkeypatch):
    path = tmp_path / "calls.jsonl"
    path.write_text("")
    monkeypatch.setenv("SUPKD_FAKE_LOG", str(path))
    monkeypatch.delenv("SUPKD_FAKE_KILL_AT", raising=False)
    return path


def _calls(log):
    return [json.loads(x) for x in log.read_text().splitlines() if x]


def test_plan_expansion_order_and_substitution(tmp_path):
    plan = plan_grid(_spec(), tmp_path)
    names = [r.name for r in plan]
    assert len(names) == len(set(names)) == 2 + 2 * (3 + 2) + 2 + 2
    assert names.index("teacher-s0") < names.index("kd_gram-tune-a0.1-s0")
    for r in plan:
        for d in r.deps + r.soft_deps:
            assert names.index(d) < names.index(r.name)
    by = {r.name: r for r in plan}
    tune = by["kd_cosine-tune-a10-s0"]
    assert tune.config["task"]["teacher"] == str((tmp_path / "teacher-s0").resolve())
    assert tune.config["task"]["alpha"] == 10.0 and isinstance(tune.config["task"]["alpha"], float)
    assert tune.config["task"]["acc"] == 85 and tune.config["task"]["loss"] == "cosine"
    assert tune.config["data"] == {"name": "digits", "val_fraction": 0.2}
    assert tune.config["meta"]["stage"] == "tune" and tune.config["meta"]["method"] == "cosine"
    final = by["kd_gram-s1"]
    assert final.config["task"]["alpha"] == "${alpha}"  # chosen after tuning
    assert final.config["data"]["val_fraction"] == 0.0
    assert final.deps == ["teacher-s1"]
    assert sorted(final.soft_deps) == sorted(f"kd_gram-tune-a{a}-s0" for a in ("0.1", "1", "10"))
    assert by["abl-s1"].deps == ["teacher-s0"]  # pinned seed
    assert by["abl-s1"].soft_deps == final.soft_deps  # alpha_from kd_gram
    assert by["kd_gram-s1/cka"].deps == ["kd_gram-s1", "teacher-s1"]
    assert final.config["meta"]["published"] == "cifar10"
    assert final.config["meta"]["alpha_candidates"] == [0.1, 1.0, 10.0]


@pytest.mark.parametrize(
    "change,match",
    [
        ({"bogus": 1}, "unknown key 'bogus'"),
        ({"seeds": [0, 0]}, "seeds repeat"),
        ({"seeds": "x"}, "'seeds'"),
        ({"runs": {}}, "'runs' is empty"),
        ({"runs": {"a": {"config": {"x": "${run:nope}"}}}}, r"names no run"),
        ({"runs": {"a": {"config": {"x": "${what}"}}}}, r"unknown substitution \$\{what\}"),
        ({"runs": {"a_{m}": {"config": {}}}}, "not in its matrix"),
        ({"runs": {"a": {"alpha_from": "b"}}}, "no run named 'b'"),
        ({"runs": {"a": {"alphas": [1, "x"]}}}, "expected numbers"),
        ({"runs": {"a": {"seeds": [1]}, "b": {"config": {"t": "${run:a}"}}}}, "needs seed 0"),
        ({"runs": {"a": {"confg": {}}}}, "unknown key 'confg'"),
        ({"cka": {"teacher": "nobody"}}, "cka.teacher"),
    ],
)
def test_bad_specs(tmp_path, change, match):
    if "runs" in change:
        change = {"cka": None, **change}
    with pytest.raises(ConfigError, match=match):
        plan_grid(_spec(**change), tmp_path)


def test_full_grid_runs_in_order_and_tunes_alpha(tmp_path, log):
    out = io.StringIO()
    res = run_grid(_spec(), tmp_path / "runs", run_fn=fake_run, analysis_fn=fake_cka,
                   stream=out)
    assert res.ok and res.count("completed") == 16
    assert res.alphas["kd_gram"][0] == 1.0 and res.alphas["kd_cosine"][0] == 1.0
    cfg = json.loads((tmp_path / "runs" / "kd_gram-s1" / "result.json").read_text())["meta"]
    assert cfg["alpha"] == 1.0 and cfg["stage"] == "final"
    abl = json.loads((tmp_path / "runs" / "abl-s0" / "result.json").read_text())["meta"]
    assert abl["alpha"] == 1.0 and abl["alpha_from"] == "kd_gram"
    assert (tmp_path / "runs" / "kd_gram-s0" / "cka.json").is_file()
    text = out.getvalue()
    assert "[16/16]" in text and "α for kd_gram: 1" in text
    # the report reads the same directories and shows the α choice
    md = write_report(tmp_path / "runs").markdown_path.read_text()
    assert "gram from ce teacher | 0.1, 1, 10 |" in md


def test_killed_grid_resumes_without_redoing_completed_runs(tmp_path, log, monkeypatch):
    runs = tmp_path / "runs"
    monkeypatch.setenv("SUPKD_FAKE_KILL_AT", "kd_cosine-tune-a1-s0")
    with pytest.raises(KeyboardInterrupt):
        run_grid(_spec(), runs, run_fn=fake_run, analysis_fn=fake_cka, stream=None)
    first = _calls(log)
    done_before = {c["name"] for c in first if c["name"] != "kd_cosine-tune-a1-s0"}
    assert "teacher-s0" in done_before and len(done_before) >= 4
    mtimes = {n: (runs / n / "result.json").stat().st_mtime_ns for n in done_before
              if not n.endswith("/cka")}
    monkeypatch.delenv("SUPKD_FAKE_KILL_AT")
    log.write_text("")
    res = run_grid(_spec(), runs, run_fn=fake_run, analysis_fn=fake_cka, stream=None)
    second = _calls(log)
    assert res.ok and not (done_before & {c["name"] for c in second})
    assert {"name": "kd_cosine-tune-a1-s0", "resume": True} in second
    assert all(not c["resume"] for c in second if c["name"] != "kd_cosine-tune-a1-s0")
    for n, t in mtimes.items():
        assert (runs / n / "result.json").stat().st_mtime_ns == t
    # a third run does nothing at all
    log.write_text("")
    res = run_grid(_spec(), runs, run_fn=fake_run, analysis_fn=fake_cka, stream=None)
    assert _calls(log) == [] and res.count("cached") == 16


def test_failures_are_recorded_and_the_grid_goes_on(tmp_path, log):
    spec = _spec(runs={
        "bad_teacher": {"config": {"task": {"fail": True}}},
        "student": {"config": {"task": {"teacher": "${run:bad_teacher}"}}},
        "unstable": {"config": {"task": {"diverge": True}},
                     "meta": {"table": "table5", "placement": "none"}},
        "fine": {"config": {"task": {"acc": 70}}},
    }, cka=None)
    res = run_grid(spec, tmp_path / "runs", run_fn=fake_run, stream=None)
    assert res.statuses["bad_teacher-s0"] == "failed"
    assert res.statuses["student-s1"] == "skipped"
    assert res.statuses["unstable-s0"] == "diverged"
    assert res.statuses["fine-s1"] == "completed"
    assert not res.ok and any("simulated crash" in p for p in res.problems)
    failed = json.loads((tmp_path / "runs" / "bad_teacher-s0" / "result.json").read_text())
    assert failed["status"] == "failed" and "simulated crash" in failed["error"]
    md = write_report(tmp_path / "runs").markdown_path.read_text()
    assert "NaN (diverged at steps 7, 7)" in md and "bad_teacher-s0" in md
    # a second grid retries the failed run but not the diverged or completed ones
    log.write_text("")
    run_grid(spec, tmp_path / "runs", run_fn=fake_run, stream=None)
    again = {c["name"] for c in _calls(log)}
    assert again == {"bad_teacher-s0", "bad_teacher-s1"}


def test_changed_config_is_kept_unless_asked(tmp_path, log):
    spec = _spec(runs={"a": {"config": {"task": {"acc": 70}}}}, cka=None)
    run_grid(spec, tmp_path / "r", run_fn=fake_run, stream=None)
    changed = _spec(runs={"a": {"config": {"task": {"acc": 75}}}}, cka=None)
    log.write_text("")
    res = run_grid(changed, tmp_path / "r", run_fn=fake_run, stream=None)
    assert _calls(log) == [] and sorted(res.stale) == ["a-s0", "a-s1"]
    res = run_grid(changed, tmp_path / "r", run_fn=fake_run, stream=None, rerun_changed=True)
    assert len(_calls(log)) == 2 and not res.stale
    r = json.loads((tmp_path / "r" / "a-s0" / "result.json").read_text())
    assert r["test_acc"] == 75.0


def test_spec_hash_ignores_itself():
    cfg = {"a": 1, "meta": {"x": 1}}
    h = spec_hash(cfg)
    assert spec_hash({"a": 1, "meta": {"x": 1, "spec_hash": h}}) == h
    assert spec_hash({"a": 2, "meta": {"x": 1}}) != h


@pytest.mark.slow
def test_parallel_jobs_run_every_run_once(tmp_path, log):
    spec = _spec(seeds=[0], cka=None)
    res = run_grid(spec, tmp_path / "runs", jobs=2, run_fn=fake_run, stream=None)
    assert res.ok and res.count("completed") == 1 + 2 * 3 + 2 + 1
    names = [c["name"] for c in _calls(log)]
    assert len(names) == len(set(names)) == 10
    assert Path(tmp_path / "runs" / "abl-s0" / "result.json").is_file()


def test_imported_teacher_is_used_and_never_deleted(tmp_path, log):
    runs = tmp_path / "runs"
    (runs / "t-s0").mkdir(parents=True)
    (runs / "t-s0" / "model.pt").write_bytes(b"weights")
    (runs / "t-s0" / "result.json").write_text(json.dumps(
        {"status": "imported", "test_acc": None, "meta": {"imported": True}}))
    spec = parse_grid({"seeds": [0], "runs": {
        "t": {"config": {"task": {"name": "ce"}}},
        "s": {"config": {"task": {"name": "x", "teacher": "${run:t}"}}}}})
    res = run_grid(spec, runs, run_fn=_accepting_run, stream=None, rerun_changed=True)
    assert res.statuses == {"t-s0": "cached", "s-s0": "completed"}
    assert (runs / "t-s0" / "model.pt").read_bytes() == b"weights"
    assert [c["name"] for c in _calls(log)] == ["s-s0"]


def _accepting_run(config, run_dir, resume):
    """fake_run, but accepting an imported teacher."""
    config = json.loads(json.dumps(config))
    config["task"].pop("teacher")
    return fake_run(config, run_dir, resume)


@pytest.mark.slow
def test_dead_worker_fails_its_run_only_and_the_rest_is_requeued(tmp_path, log):
    spec = parse_grid({
        "grid": "w", "seeds": [0, 1, 2],
        "runs": {"a": {}, "oom": {"seeds": [0], "config": {"task": {"die": True}}}, "b": {}},
    })
    out = io.StringIO()
    res = run_grid(spec, tmp_path / "runs", jobs=2, run_fn=fake_run, stream=out)
    assert res.statuses.pop("oom-s0") == "failed"
    assert set(res.statuses.values()) == {"completed"} and len(res.statuses) == 6
    assert res.problems == ["oom-s0: failed (worker died: its process was killed by SIGKILL "
                            "(the kernel's out-of-memory killer sends SIGKILL))"]
    # The dead run leaves a record (the report lists it) and the next grid retries it only.
    rec = json.loads((tmp_path / "runs" / "oom-s0" / "result.json").read_text())
    assert rec["status"] == "failed" and "SIGKILL" in rec["error"]
    calls = [json.loads(x)["name"] for x in Path(log).read_text().splitlines()]
    # Every innocent run ended completed exactly once, though a requeued one may have started
    # twice (its first worker was stopped with the pool).
    assert {c for c in calls if c != "oom-s0"} == {f"{n}-s{s}" for n in "ab" for s in range(3)}
    Path(log).write_text("")
    res2 = run_grid(spec, tmp_path / "runs", jobs=2, run_fn=fake_run, stream=None)
    assert res2.statuses["oom-s0"] == "failed"
    assert [json.loads(x)["name"] for x in Path(log).read_text().splitlines()] == ["oom-s0"]


def test_worker_death_descriptions():
    from supkd.experiments.grid import _death

    assert _death(None) is None and _death(0) is None
    assert _death(-signal.SIGTERM) is None  # the pool stopping its other workers
    assert "SIGSEGV" in _death(-signal.SIGSEGV)
    assert _death(3) == "its process exited with code 3"
