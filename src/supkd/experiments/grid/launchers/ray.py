"""``--launcher ray``: one Ray core task per run (``ray.remote`` with ``max_retries``).

The driver connects to a running Ray cluster (``--ray-address HOST:PORT``, or the
``RAY_ADDRESS`` environment variable), else starts a local one on this machine. A run's
``resources`` become its task's request: ``num_cpus`` = ``cpus`` x ranks (``cpus`` is also
each rank's torch thread count), ``num_gpus`` = ``gpus`` (a fraction packs several small
runs on one GPU: ``gpus: 0.25`` runs four at once on each), ``memory`` = ``mem_gb`` and
``resources.ray.resources`` (custom resources). A run with several GPUs (or
``tasks_per_node``) is a DDP group inside its task, started by torchrun's agent on the
task's node (:func:`~.worker.run_ddp_job`).

Faults: a task whose worker process dies (killed, out of memory, node lost) is retried by
Ray up to ``resources.ray.max_retries`` times (default 3) and resumes from the checkpoint
its run directory holds; a run that fails for its own reasons returns a failed result,
which is final (``retry_exceptions`` stays off).

Ray tasks belong to the driver that submitted them and end with it: Ctrl-C cancels them
(Ray sends each a SIGINT, on which the engine saves a checkpoint), and the next ``supkd
grid`` resumes them; there is no ``--detach`` (to keep a grid going without a terminal, run
the driver itself on the cluster: ``ray job submit -- supkd grid SPEC --launcher ray``).
Each submission is recorded in ``RUN/launcher.json`` with the driver's Ray job id; a second
driver on the same runs folder, while the first still runs, follows the first one's runs
through their run directories instead of submitting them again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from supkd.errors import UserError
from supkd.experiments.grid.executor import Executor, Job, Outcome
from supkd.experiments.grid.jobs import launcher_info
from supkd.experiments.grid.launchers.records import read_launch, write_launch
from supkd.experiments.grid.launchers.registry import (
    LauncherOptions,
    register_launcher,
    resource_error,
)
from supkd.experiments.grid.launchers.worker import run_ddp_job, run_job
from supkd.experiments.grid.plan import PlannedRun
from supkd.experiments.grid.resources import number, section, whole
from supkd.train.run_dir import RunDir
from supkd.vocab import GridState, RunStatus

UNLIMITED = 1_000_000  # tasks at once when --jobs is not given: Ray queues them
DEFAULT_MAX_RETRIES = 3
_POLL_S = 0.5  # runs followed through their directories (another driver's)
_CANCEL_WAIT_S = 120.0


def run_ray_task(job: Job, threads: int) -> dict[str, Any]:
    """What one Ray task runs (on a Ray worker): ``job``, as one process or a DDP group."""
    import ray

    ctx = ray.get_runtime_context()
    launcher = launcher_info("ray", threads, task_id=ctx.get_task_id(),
                             ray_job=ctx.get_job_id(), node_id=ctx.get_node_id(),
                             ranks=job.resources.ranks, gpu_share=job.resources.gpus,
                             gpu_ids=[str(g) for g in ray.get_gpu_ids()],
                             started_at=round(time.time(), 3))
    if job.resources.ranks > 1:
        return run_ddp_job(job, threads, launcher)
    return run_job(job, threads, launcher)


def _reachable(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=3):
            return True
    except (OSError, ValueError):
        return False


def _connect(address: str | None) -> bool:
    """Join the Ray cluster at ``address`` (None: start one here); True when this process
    joined (and so leaves it at shutdown), False when it already was in one."""
    import ray

    if ray.is_initialized():
        return False
    # ray.init keeps retrying an address where nothing answers for minutes: look first.
    if address and address != "auto" and not address.startswith("ray://") \
            and not _reachable(address):
        raise UserError(f"launcher ray: no Ray cluster answers at {address} (--ray-address "
                        "or RAY_ADDRESS); start one with `ray start --head`, or leave both "
                        "unset to start one on this machine")
    try:
        # No address: "local" starts a Ray instance of our own; None would join the last
        # one `ray start` left on this machine (/tmp/ray/ray_current_cluster), and wait for
        # minutes when that one has ended.
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError) as exc:
        raise UserError(f"launcher ray: cannot join the Ray cluster at {address or 'a new '}"
                        f"local one ({str(exc).splitlines()[0][:200]})") from None
    return True


def _driver_alive(ray_job: str) -> bool:
    """Whether the Ray job (driver) ``ray_job`` of this cluster is still running."""
    import ray

    for j in ray.state.jobs():
        if j.get("JobID") == ray_job:
            return not j.get("IsDead", True)
    return False


def _ended_in_dir(run_dir: Path, analysis: bool) -> dict[str, Any] | None:
    """What a run (or CKA ``analysis``) another driver runs left in its directory once it
    ended, else None."""
    rd = RunDir(run_dir)
    if analysis:
        return {"status": RunStatus.COMPLETED} if rd.cka_path.is_file() else None
    res, _ = rd.read_result()
    return res if res is not None and res.get("status") else None


class RayExecutor:
    """The :class:`~supkd.experiments.grid.executor.Executor` of ``--launcher ray``."""

    after_ok = False

    def __init__(self, options: LauncherOptions) -> None:
        import ray

        self._ray = ray
        self._owned = _connect(options.ray_address or os.environ.get("RAY_ADDRESS") or None)
        ctx = ray.get_runtime_context()
        self.ray_job, self.address = ctx.get_job_id(), ctx.gcs_address
        self.slots = options.jobs or UNLIMITED
        self._stream = options.stream
        self._task = ray.remote(run_ray_task)
        self._refs: dict[Any, str] = {}  # ObjectRef -> run name
        # Another driver's runs: run directory, its Ray job, whether it is a CKA analysis.
        self._watched: dict[str, tuple[Path, str, bool]] = {}

    def attach(self, name: str, run_dir: Path, *, analysis: bool = False) -> str | None:
        entry = read_launch(run_dir, name)
        if not entry or entry.get("launcher") != "ray" or entry.get("address") != self.address:
            return None
        other = str(entry.get("ray_job"))
        if other == self.ray_job or not _driver_alive(other):
            return None  # its driver ended, and its tasks with it: resume it here
        self._watched[name] = (Path(run_dir), other, analysis)
        return (f"run by another supkd grid (Ray job {other}, pid {entry.get('driver_pid')} "
                f"on {entry.get('driver_host')}); followed through its run directory")

    def submit(self, job: Job) -> None:
        r = job.resources
        threads = r.threads(1)
        opts: dict[str, Any] = {
            "num_cpus": threads * r.ranks, "num_gpus": r.gpus,
            "max_retries": r.section("ray").get("max_retries", DEFAULT_MAX_RETRIES),
            "retry_exceptions": False, "name": f"supkd:{job.name}",
        }
        if r.mem_gb is not None:
            opts["memory"] = int(r.mem_gb * 2**30)
        if r.section("ray").get("resources"):
            opts["resources"] = dict(r.section("ray")["resources"])
        # Recorded before the task exists: a worker that is already up starts it at once.
        write_launch(job.run_dir, job.name, {
            "launcher": "ray", "ray_job": self.ray_job, "address": self.address,
            "driver_pid": os.getpid(), "driver_host": socket.gethostname()})
        ref = self._task.options(**opts).remote(job, threads)
        self._refs[ref] = job.name

    def wait(self) -> list[Outcome]:
        while True:
            ended = self._followed()
            if self._refs:
                timeout = _POLL_S if self._watched else None
                ready, _ = self._ray.wait(list(self._refs), num_returns=1, timeout=timeout)
                if ready:  # and whatever else has ended by now
                    ready, _ = self._ray.wait(list(self._refs), num_returns=len(self._refs),
                                              timeout=0)
                ended += [self._result(ref) for ref in ready]
            elif self._watched and not ended:
                time.sleep(_POLL_S)
            if ended or not (self._refs or self._watched):
                return ended

    def _result(self, ref: Any) -> Outcome:
        from ray import exceptions as rx

        name = self._refs.pop(ref)
        try:
            return Outcome(name, self._ray.get(ref))
        except rx.TaskCancelledError:
            return Outcome(name, None, "its Ray task was cancelled")
        except rx.RayTaskError as exc:  # a bug outside the run (the run's own are caught)
            why = str(exc.cause if exc.cause is not None else exc).splitlines()[0][:300]
            return Outcome(name, {"status": RunStatus.FAILED, "error": f"Ray task failed: {why}"})
        except rx.RayError as exc:  # worker died more often than max_retries, node lost
            why = str(exc).splitlines()[0][:300]
            return Outcome(name, {"status": RunStatus.FAILED, "error": f"Ray task lost: {why}"})

    def _followed(self) -> list[Outcome]:
        """Runs of another driver that ended (in their directories), or whose driver ended
        without them (handed back: they are submitted here and resume)."""
        out = []
        for name, (run_dir, other, analysis) in list(self._watched.items()):
            res = _ended_in_dir(run_dir, analysis)
            if res is None and _driver_alive(other):
                continue
            del self._watched[name]
            out.append(Outcome(name, res) if res is not None else
                       Outcome(name, None, f"the supkd grid of Ray job {other} ended"))
        return out

    def interrupt(self) -> None:
        """Cancel the running tasks (each gets a SIGINT: the engine saves a checkpoint) and
        wait for them to stop, so that the next ``supkd grid`` resumes them."""
        refs = list(self._refs)
        for ref in refs:
            self._ray.cancel(ref)
        if refs:
            self._ray.wait(refs, num_returns=len(refs), timeout=_CANCEL_WAIT_S)
            if self._stream is not None:
                print(f"stopped {len(refs)} Ray task(s) (Ray tasks end with their driver); "
                      "running runs saved a checkpoint: the same `supkd grid` command "
                      "resumes them", file=self._stream, flush=True)

    def shutdown(self) -> None:
        if self._owned:
            self._ray.shutdown()

    @staticmethod
    def live(entries: Mapping[Any, dict[str, Any]]) -> dict[Any, tuple[str, str]]:
        """For ``--status``, without joining the cluster: key -> (``running``, text) for
        each launcher.json entry whose driver process is still alive on this host (its Ray
        tasks live as long as it does). A driver on another host is not looked at."""
        out = {}
        for k, e in entries.items():
            if e.get("driver_host") != socket.gethostname():
                continue
            with contextlib.suppress(OSError, TypeError, ValueError):
                os.kill(int(e["driver_pid"]), 0)
                out[k] = (GridState.RUNNING, f"Ray task of supkd grid pid {e['driver_pid']} (Ray "
                                     f"job {e.get('ray_job')})")
        return out

    def check_feasible(self, plan: Sequence[PlannedRun]) -> None:
        """Refuse a run whose task no node of the cluster can take (it would wait forever
        as an infeasible task), naming the field and what the largest node has."""
        nodes = [n.get("Resources", {}) for n in self._ray.nodes() if n.get("Alive")]
        if not nodes:
            return
        for run in plan:
            r = run.resources
            need = {"CPU": float(r.threads(1) * r.ranks), "GPU": r.gpus,
                    **{k: float(v) for k, v in r.section("ray").get("resources", {}).items()}}
            for key, amount in need.items():
                best = max(float(n.get(key, 0.0)) for n in nodes)
                if amount > best + 1e-9:
                    field = {"CPU": "cpus", "GPU": "gpus"}.get(key, f"ray.resources.{key}")
                    has = (f"at most {best:g} {key} per node" if best else
                           f"no {key} on any node")
                    raise resource_error("ray", run, field, f"{amount:g} {key} asked, the Ray "
                                         f"cluster at {self.address} has {has}")


def parse_ray_section(raw: Any, where: str) -> dict[str, Any]:
    """``resources.ray``: ``max_retries`` (times a task whose worker died is retried,
    default 3) and ``resources`` (Ray custom resources, ``{name: amount}``)."""
    sec = section(raw, ("max_retries", "resources"), where)
    if "max_retries" in sec:
        whole(sec["max_retries"], f"{where}.max_retries", 0)
    if "resources" in sec:
        res = section(sec["resources"], None, f"{where}.resources")
        for k, v in res.items():
            number(v, f"{where}.resources.{k}", positive=True)
        sec["resources"] = res
    return sec


def _check_resources(plan: Sequence[PlannedRun]) -> None:
    for run in plan:
        if run.resources.nodes > 1:
            raise resource_error("ray", run, "nodes",
                                 "a Ray task runs on one node; a multi-node DDP run needs "
                                 f"--launcher slurm, got {run.resources.nodes}")


@register_launcher("ray", section=parse_ray_section, live=RayExecutor.live)
def ray_launcher(options: LauncherOptions, plan: Sequence[PlannedRun]) -> Executor:
    """One Ray task per run; needs the ``cluster`` extra (a cluster is started if none is
    given)."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise UserError("launcher ray: needs the ray package; install it with "
                        "pip install 'supkd[cluster]'") from None
    _check_resources(plan)
    executor = RayExecutor(options)
    try:
        executor.check_feasible(plan)
    except UserError:
        executor.shutdown()
        raise
    return executor
