"""A launcher whose package or cluster is missing, or that cannot give what a run asks
for, is one line naming it and what to do, exit code 2, before anything is submitted."""

from __future__ import annotations

import socket
import sys

import pytest

from supkd.cli import main

from .grids import small_raw, write_spec


@pytest.fixture()
def grid(tmp_path):
    return str(write_spec(small_raw("errs"), tmp_path))


def _run(capsys, *argv) -> tuple[int, str]:
    code = main(["grid", *argv])
    err = capsys.readouterr().err.strip()
    return code, err


def _one_line(err: str) -> str:
    assert len(err.splitlines()) == 1, err
    return err


def test_an_unknown_launcher(capsys, grid, tmp_path):
    code, err = _run(capsys, grid, "--out", str(tmp_path / "o"), "--launcher", "slurn")
    assert code == 2
    assert "unknown launcher 'slurn'" in _one_line(err) and "did you mean 'slurm'" in err
    assert not (tmp_path / "o" / "teacher-s0").exists()


@pytest.mark.parametrize(("launcher", "package"), [("slurm", "submitit"), ("ray", "ray")])
def test_a_missing_package_names_the_extra(capsys, monkeypatch, grid, tmp_path, launcher,
                                           package):
    monkeypatch.setitem(sys.modules, package, None)  # `import package` raises ImportError
    code, err = _run(capsys, grid, "--out", str(tmp_path / "o"), "--launcher", launcher)
    assert code == 2
    assert _one_line(err).endswith(f"launcher {launcher}: needs the {package} package; "
                                   "install it with pip install 'supkd[cluster]'")


def test_no_slurm_here(capsys, monkeypatch, grid, tmp_path):
    pytest.importorskip("submitit")
    monkeypatch.setenv("PATH", str(tmp_path))  # no sinfo, no sbatch
    code, err = _run(capsys, grid, "--out", str(tmp_path / "o"), "--launcher", "slurm")
    assert code == 2
    assert "launcher slurm: no Slurm commands here" in _one_line(err)
    assert ".ci/slurm-up.sh" in err and "--launcher local" in err


def test_no_ray_cluster_at_the_address(capsys, grid, tmp_path):
    pytest.importorskip("ray")
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, err = _run(capsys, grid, "--out", str(tmp_path / "o"), "--launcher", "ray",
                     "--ray-address", f"127.0.0.1:{port}")
    assert code == 2
    assert f"launcher ray: no Ray cluster answers at 127.0.0.1:{port}" in _one_line(err)
    assert "ray start --head" in err


@pytest.mark.parametrize(("launcher", "resources", "message"), [
    ("slurm", {"gpus": 0.25}, "'runs.teacher.resources.gpus': Slurm gives whole GPUs, got "
                              "0.25 (a share of one GPU needs packing: resources.slurm.pack "
                              "and concurrent, or --launcher ray)"),
    ("ray", {"nodes": 2, "tasks_per_node": 1}, "'runs.teacher.resources.nodes': a Ray task "
                                               "runs on one node"),
    ("local", {"tasks_per_node": 2}, "'runs.teacher.resources.tasks_per_node': a DDP run of "
                                     "2 ranks needs --launcher slurm or ray"),
])
def test_resources_a_launcher_cannot_give(capsys, tmp_path, launcher, resources, message):
    pytest.importorskip({"slurm": "submitit", "ray": "ray"}.get(launcher, "yaml"))
    raw = small_raw("errs")
    raw["runs"]["teacher"]["resources"] = resources
    code, err = _run(capsys, str(write_spec(raw, tmp_path)), "--out", str(tmp_path / "o"),
                     "--launcher", launcher)
    assert code == 2 and message in _one_line(err)
    assert not (tmp_path / "o" / "teacher-s0").exists()


def test_detach_needs_a_launcher_that_can_hold_jobs(capsys, grid, tmp_path):
    code, err = _run(capsys, grid, "--out", str(tmp_path / "o"), "--detach")
    assert code == 2 and "--detach" in _one_line(err) and "--launcher slurm" in err


def test_a_bad_sbatch_flag(capsys, grid, tmp_path):
    code, err = _run(capsys, grid, "--out", str(tmp_path / "o"), "--sbatch", "exclusive")
    assert code == 2 and "--sbatch: expected FLAG=VALUE" in _one_line(err)


def test_a_bad_resources_section_is_exit_2(capsys, tmp_path):
    raw = small_raw("errs")
    raw["resources"] = {"gpu": 1}
    code, err = _run(capsys, str(write_spec(raw, tmp_path)), "--dry-run")
    assert code == 2 and "grid field 'resources': unknown key 'gpu'" in _one_line(err)
