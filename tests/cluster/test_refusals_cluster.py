"""Reliability catalogue, issue 25 classes 1-3, against the real Slurm and Ray: a refusal by
the cluster, a bad resources value and a request no node can satisfy are each one line,
exit 2, naming the field or option (and what the cluster has, or its own reason), no
traceback, no run directory written, no hang; where the launcher cannot know, the pending
reason is shown within seconds and by ``--status``."""

from __future__ import annotations

import io
import json
import subprocess
import threading
from pathlib import Path

import pytest

from supkd.cli import main
from supkd.experiments.grid import run_grid
from supkd.experiments.grid.launchers.slurm_queue import job_states

from .grids import long_raw, small_raw, spec, unique, wait_for, write_spec
from .test_slurm import _status

pytestmark = pytest.mark.slow


def _refused(capsys, argv: list[str], *needles: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, (code, lines)
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"
    return lines[0]


def _grid(tmp_path: Path, resources: dict | None = None, **top) -> str:
    raw = small_raw(unique("rf"))
    if resources is not None:
        raw["runs"]["teacher"]["resources"] = resources
    raw.update(top)
    return str(write_spec(raw, tmp_path))


def _nothing_written(out: Path) -> None:
    assert not list(out.glob("*/launcher.json")) and not list(out.glob("*-s0"))


# --- class 2: bad values, found when the spec is read (--dry-run too) ---------------------

@pytest.mark.parametrize(("resources", "needle"), [
    ({"gpus": float("inf")}, "'runs.teacher.resources.gpus': expected a finite number"),
    ({"mem_gb": float("inf")}, "'runs.teacher.resources.mem_gb': expected a finite number"),
    ({"ray": 5}, "'runs.teacher.resources.ray': expected a mapping, got 5"),
    ({"slurm": {"pack": -1}}, "'runs.teacher.resources.slurm.pack': expected a whole number"),
    ({"slurm": {"array_parallelism": 0}}, "'runs.teacher.resources.slurm.array_parallelism'"),
])
def test_a_bad_resources_value_is_reported_by_dry_run(capsys, tmp_path, resources, needle):
    _refused(capsys, ["grid", _grid(tmp_path, resources), "--dry-run"], needle)


def test_a_bad_pack_option(capsys, tmp_path):
    _refused(capsys, ["grid", _grid(tmp_path), "--out", str(tmp_path / "o"), "--launcher",
                      "slurm", "--pack", "0"], "--pack: expected a number of runs per Slurm "
                                                "job >= 1, got 0")
    _nothing_written(tmp_path / "o")


# --- classes 1 and 3 on Slurm -----------------------------------------------------------

@pytest.mark.usefixtures("slurm")
@pytest.mark.parametrize(("resources", "argv", "needles"), [
    ({"slurm": {"partition": "nope"}}, [],
     ("'runs.teacher.resources.slurm.partition': no partition 'nope'", "it has debug")),
    ({}, ["--partition", "nowhere"], ("'--partition': no partition 'nowhere'",)),
    ({"gpus": 1}, [], ("'runs.teacher.resources.gpus': 1 GPUs per node asked",
                       "no GPUs (sinfo gres: (null))")),
    ({"nodes": 2}, [], ("'runs.teacher.resources.nodes': 2 nodes asked, partition debug "
                        "has 1 node",)),
    ({"cpus": 64}, [], ("'runs.teacher.resources.cpus': 64 CPUs per node asked",
                        "at most")),
    ({"mem_gb": 100000}, [], ("'runs.teacher.resources.mem_gb': 100000 GB per node asked",)),
    ({"cpus": 1, "slurm": {"pack": 8, "concurrent": 8}}, [],
     ("'runs.teacher.resources.cpus': 8 CPUs per node asked (8 runs at once)",)),
])
def test_slurm_requests_no_node_can_satisfy_are_refused_before_submission(
        capsys, tmp_path, resources, argv, needles):
    out = tmp_path / "o"
    _refused(capsys, ["grid", _grid(tmp_path, resources), "--out", str(out), "--launcher",
                      "slurm", *argv], *needles)
    _nothing_written(out)
    assert not (out / ".slurm").exists()


@pytest.mark.usefixtures("slurm")
@pytest.mark.parametrize(("flag", "needles"), [
    ("bogus-flag=1", ("--sbatch bogus-flag", "sbatch: unrecognized option")),
    ("gres=gpu:1", ("--sbatch gres", "Invalid generic resource (gres) specification")),
])
def test_an_sbatch_refusal_is_one_line_and_submits_nothing_more(capsys, tmp_path, flag,
                                                                needles):
    out = tmp_path / "o"
    _refused(capsys, ["grid", _grid(tmp_path), "--out", str(out), "--launcher", "slurm",
                      "--sbatch", flag], "launcher slurm: sbatch refused run",
             "nothing more was submitted", *needles)
    assert not list(out.glob("*/launcher.json"))  # the first refusal stopped the grid
    assert len(list((out / ".slurm").glob("*_submission.sh"))) <= 1


@pytest.mark.usefixtures("slurm")
def test_a_pending_reason_is_shown_within_seconds_and_by_status(tmp_path):
    raw = long_raw(unique("rp"), runs=("later",), student=False, epochs=1)
    raw["resources"] = {**raw["resources"], "slurm": {"sbatch": {"begin": "now+1hour"}}}
    out, buf = tmp_path / "runs", io.StringIO()
    res = run_grid(spec(raw), out, launcher="slurm", detach=True, stream=buf)
    assert res.statuses == {"later-s0": "submitted"}
    text = _status(write_spec(raw, tmp_path), out)
    assert "queued" in text and "pending (BeginTime)" in text, text
    # A driver following it says why it waits (Slurm's own reason), at its first look.
    buf = io.StringIO()
    t = threading.Thread(target=run_grid, args=(spec(raw), out), daemon=True,
                         kwargs={"launcher": "slurm", "stream": buf})
    t.start()
    wait_for(lambda: "Slurm's pending reason (BeginTime)" in buf.getvalue(), 30,
             "the pending reason")
    job = json.loads((out / "later-s0" / "launcher.json").read_text())["later-s0"]["job_id"]
    assert job_states([job])[job].reason == "BeginTime"
    subprocess.run(["scancel", job], check=True)
    t.join(60)
    assert not t.is_alive()


# --- class 3 on Ray -----------------------------------------------------------------------

@pytest.mark.parametrize(("resources", "needles"), [
    ({"gpus": 2}, ("'runs.teacher.resources.gpus': 2 GPU asked", "at most 1 GPU per node")),
    ({"cpus": 8}, ("'runs.teacher.resources.cpus': 8 CPU asked", "at most 4 CPU per node")),
    ({"ray": {"resources": {"a100": 1}}},
     ("'runs.teacher.resources.ray.resources.a100': 1 a100 asked", "no a100 on any node")),
])
def test_ray_requests_no_node_can_satisfy_are_refused(capsys, tmp_path, ray_address,
                                                      resources, needles):
    out = tmp_path / "o"
    _refused(capsys, ["grid", _grid(tmp_path, resources), "--out", str(out), "--launcher",
                      "ray", "--ray-address", ray_address], *needles,
             "the Ray cluster at ")
    _nothing_written(out)
