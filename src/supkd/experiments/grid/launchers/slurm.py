"""``--launcher slurm``: one Slurm job per run, submitted with submitit's ``AutoExecutor``.

A run's ``resources`` become its sbatch request: ``cpus`` -> ``--cpus-per-task`` (and the
torch threads of each rank), ``gpus`` -> ``--gpus-per-node``, ``nodes``, ``tasks_per_node``
(one task per DDP rank: a run with several is one DDP job), ``mem_gb`` -> ``--mem``,
``time_min`` -> ``--time`` (default a day), and ``resources.slurm`` (or ``--partition``,
``--account``, ``--qos``, ``--constraint``, ``--sbatch FLAG=VALUE``) the rest. Submitit
keeps its scripts, pickles and logs in ``RUNS/.slurm/`` (``<job id>_0_log.err`` is a job's
stderr).

The driver only submits and watches; the job writes its run directory (the only shared
state, on the cluster's shared filesystem) and ``<job id>_outcome.json`` for the driver.
Each submission is recorded in ``RUN/launcher.json``; a later ``supkd grid`` asks ``squeue``
about that job id and follows the job when it is still queued or running, instead of
submitting the run again. ``--detach`` submits runs whose dependencies are still running
with ``--dependency=afterok:<their job ids>`` (and ``--kill-on-invalid-dep=yes``: a job
whose teacher failed is cancelled, not left pending) and returns.

Ctrl-C on the driver leaves the jobs running by default (``--on-interrupt leave``: days of
cluster work are not lost to a closed terminal); ``--on-interrupt cancel`` scancels them,
and each saves a checkpoint on the SIGTERM. Either way the next ``supkd grid`` attaches to
the live ones and resumes the others.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import shutil
import signal
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supkd.errors import UserError
from supkd.experiments.grid.executor import Executor, Job, Outcome
from supkd.experiments.grid.launchers.records import read_launch, write_launch
from supkd.experiments.grid.launchers.registry import (
    LauncherOptions,
    register_launcher,
    resource_error,
)
from supkd.experiments.grid.launchers.slurm_checks import (
    check_feasible,
    refusal,
    sbatch_stderr,
)
from supkd.experiments.grid.launchers.slurm_job import SlurmRun, outcome_path
from supkd.experiments.grid.launchers.slurm_pack import PackDriver
from supkd.experiments.grid.launchers.slurm_pack_files import PackDirs
from supkd.experiments.grid.launchers.slurm_pack_worker import PackWorker
from supkd.experiments.grid.launchers.slurm_queue import (
    NOT_ITS_FAULT,
    JobState,
    cancel,
    check_cluster,
    job_states,
)
from supkd.experiments.grid.launchers.slurm_resources import (
    packing,
    parse_slurm_section,
    slurm_options,
)
from supkd.experiments.grid.plan import PlannedRun
from supkd.utils.atomic import atomic_write_json
from supkd.vocab import GridState, RunStatus

DEFAULT_TIME_MIN = 24 * 60
UNLIMITED = 1_000_000  # jobs at once when --jobs is not given: Slurm queues them
_POLL_S = 0.2  # outcome files (a stat per running job)
_QUEUE_POLL_S = 2.0  # squeue
_MAX_STRIKES = 2  # a run whose node failed this often is recorded failed
_CANCEL_WAIT_S = 120.0


@dataclass(frozen=True)
class _Tracked:
    job_id: str
    folder: Path


def _sbatch_value(value: Any) -> Any:
    return True if value is True else str(value)


def slurm_parameters(job: Job, cli: dict[str, Any], grid: str,
                     after: Sequence[str] = ()) -> dict[str, Any]:
    """submitit ``AutoExecutor.update_parameters`` arguments for ``job`` (``cli``: the
    command line's Slurm options, which win over the spec's ``resources.slurm``; ``after``:
    job ids it waits for)."""
    r = job.resources
    opts = slurm_options(r, cli)
    sbatch = {**r.section("slurm").get("sbatch", {}), **cli.get("sbatch", {})}
    sbatch = {k: _sbatch_value(v) for k, v in sbatch.items() if v is not False}
    if after:
        sbatch["kill-on-invalid-dep"] = "yes"
    params: dict[str, Any] = {
        "name": f"supkd-{grid}-{job.name}".replace("/", "-"),
        "timeout_min": r.time_min or DEFAULT_TIME_MIN,
        "nodes": r.nodes, "tasks_per_node": r.ranks_per_node, "cpus_per_task": r.threads(1),
        "mem_gb": r.mem_gb, "gpus_per_node": int(r.gpus) if r.gpus >= 1 else None,
        "slurm_dependency": "afterok:" + ":".join(after) if after else None,
        "slurm_additional_parameters": sbatch or None,
    }
    for key in ("partition", "account", "qos", "constraint", "exclude", "setup"):
        params[f"slurm_{key}"] = opts.get(key)
    return {k: v for k, v in params.items() if v is not None}


def _error_line(folder: Path, job_id: str) -> str:
    """The last line of the traceback submitit saved for a job that raised, or ''."""
    with contextlib.suppress(OSError, pickle.UnpicklingError, EOFError, ValueError,
                             TypeError, IndexError):
        with (folder / f"{job_id}_0_result.pkl").open("rb") as fh:
            kind, payload = pickle.load(fh)
        if kind == "error":
            return str(payload).strip().splitlines()[-1]
    return ""


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM held back (delivered when the block ends) in this thread."""
    held = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class SlurmExecutor:
    """The :class:`~supkd.experiments.grid.executor.Executor` of ``--launcher slurm``."""

    after_ok = True

    def __init__(self, options: LauncherOptions) -> None:
        import submitit

        self._submitit = submitit
        self.folder = (Path(options.runs_dir) / ".slurm").resolve()
        self.slots = options.jobs or UNLIMITED
        self._grid, self._cli = options.grid, dict(options.slurm)
        self._stream, self._on_interrupt = options.stream, options.on_interrupt
        self._jobs: dict[str, _Tracked] = {}
        self._strikes: dict[str, int] = {}
        self._last_queue = 0.0
        self._pack = PackDriver(self.folder, self._submit_workers)
        self._pending_said: dict[str, str] = {}  # job id -> the pending reason shown
        self._current = ""  # the last run handed to the pack (named in a refusal)

    def _say(self, text: str) -> None:
        if self._stream is not None:
            print(text, file=self._stream, flush=True)

    # --- submitting ----------------------------------------------------------------------

    def attach(self, name: str, run_dir: Path, *, analysis: bool = False) -> str | None:
        entry = read_launch(run_dir, name)
        if entry and entry.get("launcher") == "slurm" and entry.get("packed"):
            return self._pack.follow(name, entry, Path(run_dir), self._states_or_fail)
        if not entry or entry.get("launcher") != "slurm" or not entry.get("job_id"):
            return None
        job_id = str(entry["job_id"])
        states = job_states([job_id])
        if states is None:
            # Submitting now could run it twice; not knowing is the user's to resolve.
            raise UserError(f"launcher slurm: squeue did not answer, so whether run {name} "
                            f"(Slurm job {job_id}) is still queued is unknown; try again")
        state = states.get(job_id)
        if state is None or not state.active:
            return None
        self._jobs[name] = _Tracked(job_id, Path(entry.get("folder") or self.folder))
        return state.describe()

    def _states_or_fail(self, ids: list[str]) -> dict[str, JobState] | None:
        states = job_states(ids)
        if states is None:
            raise UserError("launcher slurm: squeue did not answer, so whether the packed "
                            f"Slurm job(s) {', '.join(ids)} still run is unknown; try again")
        return states

    def submit(self, job: Job) -> None:
        if packing(job.resources, self._cli)[0] > 1:
            self._submit_packed(job)
            return
        packed = [d for d in job.after if self._pack.after_of(d)]
        if packed:
            raise UserError(f"--detach: run {job.name} has a Slurm job of its own and "
                            f"cannot be held until packed run {packed[0]} completes; pack "
                            "it too (resources.slurm.pack) or run without --detach")
        after = [self._jobs[d].job_id for d in job.after]
        ex = self._submitit.AutoExecutor(folder=self.folder, cluster="slurm")
        ex.update_parameters(**slurm_parameters(job, self._cli, self._grid, after))
        # A Ctrl-C between sbatch and the record would leave a job no later `supkd grid`
        # knows of (and would submit again): the interrupt waits until both are done.
        with _interrupts_deferred():
            try:
                with sbatch_stderr():
                    sjob = ex.submit(SlurmRun(), job, job.resources.threads(1),
                                     str(self.folder))
            except self._submitit.core.utils.FailedJobError as exc:
                raise refusal(exc, job.name, self._cli,
                              job.resources.section("slurm").get("sbatch")) from None
            job_id = str(sjob.job_id)
            # A job id can come back after a cluster is rebuilt: not this job's outcome.
            outcome_path(self.folder, job_id).unlink(missing_ok=True)
            # Written right after sbatch returns (the job needs seconds to start python and
            # torch before the engine touches the directory).
            write_launch(job.run_dir, job.name, {"launcher": "slurm", "job_id": job_id,
                                                 "folder": str(self.folder)})
            self._jobs[job.name] = _Tracked(job_id, self.folder)

    def _submit_packed(self, job: Job) -> None:
        after = []
        for d in job.after:
            dep = self._pack.after_of(d)
            after.append(dep if dep is not None else ("job", self._jobs[d].job_id))
        params = slurm_parameters(job, self._cli, self._grid)
        self._current = job.name
        with _interrupts_deferred():
            self._pack.submit(job, params, self._cli, after)
        self._last_queue = 0.0  # ask squeue (and submit workers) at the next look

    def _submit_workers(self, params: dict[str, Any], shape: str, pack: int,
                        concurrent: int, count: int) -> list[str]:
        """``count`` packed worker jobs of ``shape`` (one array when ``array_parallelism``
        is set); their job ids."""
        ex = self._submitit.AutoExecutor(folder=self.folder, cluster="slurm")
        ex.update_parameters(name=f"supkd-{self._grid}-pack-{shape[:6]}", **params)
        args = (str(self.folder), shape, pack, concurrent)
        with _interrupts_deferred():
            try:
                with sbatch_stderr():
                    if count > 1 and "slurm_array_parallelism" in params:
                        with ex.batch():
                            sjobs = [ex.submit(PackWorker(), *args) for _ in range(count)]
                    else:
                        sjobs = [ex.submit(PackWorker(), *args) for _ in range(count)]
            except self._submitit.core.utils.FailedJobError as exc:
                raise refusal(exc, f"{self._current} (its packed worker)", self._cli,
                              params.get("slurm_additional_parameters")) from None
            ids = [str(j.job_id) for j in sjobs]
            for j in ids:
                atomic_write_json(PackDirs.of(self.folder).worker(j),
                                  {"taken": 0, "shape": shape})
        self._say(f"submitted {count} packed Slurm worker job(s) ({', '.join(ids)}): up to "
                  f"{pack} runs each, {concurrent} at once")
        return ids

    # --- watching -------------------------------------------------------------------------

    def wait(self) -> list[Outcome]:
        while True:
            ended = self._collect()
            if ended or not (self._jobs or self._pack.tasks):
                return ended
            time.sleep(_POLL_S)

    def _collect(self) -> list[Outcome]:
        ended = [o for name, t in list(self._jobs.items())
                 if (o := self._outcome(name, t)) is not None]
        ended += self._pack.collect()
        if (ended and self._last_queue) or time.monotonic() - self._last_queue < _QUEUE_POLL_S:
            return ended
        self._last_queue = time.monotonic()
        states = job_states([*(t.job_id for t in self._jobs.values()),
                             *self._pack.job_ids()])
        if states is None:
            return ended  # squeue did not answer this time: ask again later
        ended += self._pack.poll(states)
        self._show_pending(states)
        for name, t in list(self._jobs.items()):
            state = states.get(t.job_id)
            if state is not None and state.active:
                continue
            # Its outcome may have been written since the look above.
            ended.append(self._outcome(name, t) or self._lost(name, t, state))
        return ended

    def _show_pending(self, states: dict[str, JobState]) -> None:
        """Say (once per reason) why a job waits, when it is not just its turn."""
        for st in states.values():
            if st.state == "PENDING" and st.reason not in ("None", "Priority", "Dependency",
                                                            "", "JobArrayTaskLimit") \
                    and self._pending_said.get(st.job_id) != st.reason:
                self._pending_said[st.job_id] = st.reason
                self._say(f"{st.describe()}: Slurm's pending reason ({st.reason}); "
                          "`supkd grid --status` shows it too")

    def _outcome(self, name: str, t: _Tracked) -> Outcome | None:
        """The result the job left for the driver, if it has (rank 0, at its end)."""
        path = outcome_path(t.folder, t.job_id)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("job") != name:
            return None
        del self._jobs[name]
        return Outcome(name, dict(data.get("result") or {"status": RunStatus.FAILED}))

    def _lost(self, name: str, t: _Tracked, state: JobState | None) -> Outcome:
        """A job that ended without leaving its result: its node failed (submitted again,
        up to twice), or it was cancelled, ran out of time or memory, or crashed."""
        del self._jobs[name]
        how = state.state if state is not None else "(no longer known to squeue)"
        if how in NOT_ITS_FAULT:
            self._strikes[name] = self._strikes.get(name, 0) + 1
            if self._strikes[name] <= _MAX_STRIKES:
                return Outcome(name, None, f"Slurm job {t.job_id} ended {how}")
        line = _error_line(t.folder, t.job_id)
        return Outcome(name, {"status": RunStatus.FAILED, "error": (
            f"Slurm job {t.job_id} ended {how}" + (f": {line}" if line else "")
            + f" (log {t.folder / (t.job_id + '_0_log.err')})")})

    # --- stopping ---------------------------------------------------------------------------

    def interrupt(self) -> None:
        ids = sorted({t.job_id for t in self._jobs.values()} | set(self._pack.job_ids()),
                     key=_id_order)
        if self._on_interrupt == "cancel":
            self._pack.close(cancel_queued=True)
        if not ids:
            return
        if self._on_interrupt != "cancel":
            self._say(f"left {len(ids)} Slurm job(s) queued or running ({', '.join(ids)}): "
                      "the same `supkd grid` command attaches to them; `scancel "
                      f"{' '.join(ids)}` stops them (each saves a checkpoint)")
            return
        cancel(ids)
        deadline = time.monotonic() + _CANCEL_WAIT_S
        while time.monotonic() < deadline:
            states = job_states(ids)
            if states is not None and not any(s.active for s in states.values()):
                break
            time.sleep(1.0)
        self._say(f"cancelled {len(ids)} Slurm job(s) ({', '.join(ids)}); running runs "
                  "saved a checkpoint: the same `supkd grid` command resumes them")

    def shutdown(self) -> None:
        # The jobs are Slurm's, their records in the run directories. Runs left in the pack
        # (--detach, or Ctrl-C with --on-interrupt leave) get their workers now; idle
        # workers may exit once the queue is empty (this driver hands out nothing more).
        if self._pack.pending():
            states = job_states(self._pack.job_ids())
            if states is not None:
                self._pack.poll(states)
        self._pack.close(cancel_queued=False)

    @staticmethod
    def live(entries: Mapping[Any, dict[str, Any]]) -> dict[Any, tuple[str, str]]:
        """For ``--status``: key -> (``running`` or ``queued``, "Slurm job 12, running on
        node3") for each launcher.json entry whose Slurm job (or packed worker) still
        queues or runs it (one squeue for all)."""
        ids, queued = {}, {}
        for k, e in entries.items():
            if e.get("packed"):
                dirs = PackDirs.of(e.get("folder") or ".")
                holder = dirs.holder(str(e["packed"]))
                if holder is not None:
                    ids[k] = holder
                elif dirs.queued(str(e["packed"])) is not None:
                    queued[k] = (GridState.QUEUED, "in the pack queue, waiting for a packed "
                                                   "Slurm worker")
            elif e.get("job_id"):
                ids[k] = str(e["job_id"])
        if not ids or shutil.which("squeue") is None:
            return queued
        states = job_states(ids.values()) or {}
        out = {k: (GridState.RUNNING if states[j].state in ("RUNNING", "COMPLETING")
                   else GridState.QUEUED,
                   ("packed in " if entries[k].get("packed") else "") + states[j].describe())
               for k, j in ids.items() if j in states and states[j].active}
        return {**queued, **out}


def _id_order(job_id: str) -> tuple[int, int]:
    base, _, index = job_id.partition("_")
    return (int(base) if base.isdigit() else 0, int(index) if index.isdigit() else -1)


def _check_resources(plan: Iterable[PlannedRun], cli: Mapping[str, Any]) -> None:
    for run in plan:
        r = run.resources
        if 0 < r.gpus < 1 and packing(r, cli)[0] <= 1:
            raise resource_error("slurm", run, "gpus",
                                 f"Slurm gives whole GPUs, got {r.gpus:g} (a share of one "
                                 "GPU needs packing: resources.slurm.pack and concurrent, "
                                 "or --launcher ray)")


@register_launcher("slurm", section=parse_slurm_section, live=SlurmExecutor.live)
def slurm_launcher(options: LauncherOptions, plan: Sequence[PlannedRun]) -> Executor:
    """One Slurm job per run (submitit); needs the ``cluster`` extra and a Slurm cluster."""
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise UserError("launcher slurm: needs the submitit package; install it with "
                        "pip install 'supkd[cluster]'") from None
    _check_resources(plan, options.slurm)  # a spec's problem is found without a cluster too
    check_cluster()
    check_feasible(plan, options.slurm)
    return SlurmExecutor(options)
