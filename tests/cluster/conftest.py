"""Real Slurm and Ray for the launcher tests, and the local results they must equal.

- ``slurm``: the Slurm cluster that answers ``sinfo`` here (CI starts a one-node one with
  ``.ci/slurm-up.sh``); tests skip with the reason where there is none.
- ``ray_address``: a Ray head started once per session (``ray start --head --block`` on a
  free port, 4 CPUs and 1 GPU *declared*: Ray schedules by the counts it is told, so a CPU
  machine can test fractional-GPU packing), ended by its process id at the end; tests skip
  without ``ray``.
- ``local_small`` / ``local_long``: the test grids run by the local launcher, once;
  ``torchrun_ddp``: the DDP test run under torchrun, once.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from supkd.errors import UserError
from supkd.experiments.grid import plan_grid, run_grid
from supkd.experiments.grid.launchers.slurm_queue import check_cluster
from supkd.utils.ports import free_port

from .grids import SRC, ddp_raw, long_raw, outcome, small_raw, spec, torchrun_result, wait_for


@pytest.fixture(scope="session")
def slurm() -> None:
    if importlib.util.find_spec("submitit") is None:
        pytest.skip("needs submitit (pip install 'supkd[cluster]')")
    try:
        check_cluster()
    except UserError as exc:
        pytest.skip(f"no Slurm cluster here: {exc} (CI starts one with .ci/slurm-up.sh)")


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
        return True
    return False


@pytest.fixture(scope="session")
def ray_head():
    """(address, pid of `ray start --block`) of a Ray head of this session's own."""
    if importlib.util.find_spec("ray") is None:
        pytest.skip("needs ray (pip install 'supkd[cluster]')")
    port = free_port()
    # A short folder of its own: Ray's socket paths must stay under 108 characters, and
    # other Ray clusters on this machine keep theirs in /tmp/ray.
    temp = tempfile.mkdtemp(prefix="skr", dir="/tmp")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(SRC), *filter(None, [os.environ.get(
               "PYTHONPATH")])])}
    ray_cli = Path(sys.executable).with_name("ray")
    cmd = [str(ray_cli) if ray_cli.is_file() else "ray", "start", "--head", "--block",
           f"--port={port}", "--num-cpus=4", "--num-gpus=1", "--include-dashboard=false",
           "--disable-usage-stats", f"--temp-dir={temp}"]
    log = open(Path(temp) / "head.log", "w")  # noqa: SIM115 (open for the session)
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _answers(port) or proc.poll() is not None, 90, "the Ray head")
        if proc.poll() is not None:
            pytest.skip(f"`ray start --head` exited {proc.returncode}; see {log.name}")
        yield f"127.0.0.1:{port}", proc.pid
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # --block: it stops the processes it started
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


@pytest.fixture(scope="session")
def ray_address(ray_head) -> str:
    return ray_head[0]


def _local(tmp_path_factory, raw) -> dict:
    out = tmp_path_factory.mktemp("local") / "runs"
    run_grid(spec(raw), out, stream=None)
    return outcome(out)


@pytest.fixture(scope="session")
def local_small(tmp_path_factory) -> dict:
    return _local(tmp_path_factory, small_raw("local-small"))


@pytest.fixture(scope="session")
def local_long(tmp_path_factory) -> dict:
    return _local(tmp_path_factory, long_raw("local-long"))


@pytest.fixture(scope="session")
def torchrun_ddp(tmp_path_factory) -> dict:
    """The result.json of the DDP test run's config under torchrun (2 ranks, gloo)."""
    folder = tmp_path_factory.mktemp("torchrun")
    (run,) = plan_grid(spec(ddp_raw("torchrun")), folder / "runs")
    config = folder / "ddp.yaml"
    config.write_text(yaml.safe_dump(run.config))
    return torchrun_result(config, folder / "run")
