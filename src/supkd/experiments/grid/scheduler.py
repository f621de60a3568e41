"""The grid's scheduler: runs a plan in dependency order on an executor, resumably.

:class:`GridScheduler` decides, for each run whose dependencies have ended, what it needs
(nothing: cached; a resume from its checkpoint; a clean start; or a skip, when a run it
needs did not complete), chooses α from the tuning runs, and hands jobs to an
:class:`~supkd.experiments.grid.executor.Executor`, which only runs them. All it knows of
a run comes from its :class:`PlannedRun` and its run directory, never from its name.
"""

from __future__ import annotations

import contextlib
import copy
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import supkd.experiments.grid.jobs as jobs_module
from supkd.errors import ConfigError, UserError
from supkd.experiments.grid.executor import Executor, Job, Outcome
from supkd.experiments.grid.jobs import RunFn
from supkd.experiments.grid.launchers import LauncherOptions, build_launcher
from supkd.experiments.grid.plan import PlannedRun, _refs, _substitute, plan_grid, spec_hash
from supkd.experiments.grid.progress import Progress
from supkd.experiments.grid.records import cka_state, dependency_status, record_failure, run_state
from supkd.experiments.grid.spec import GridSpec
from supkd.experiments.protocols import choose_alpha
from supkd.experiments.store import load_run
from supkd.train.run_dir import RunDir
from supkd.vocab import JobStatus, RunKind, RunState

_SUMMARY_ORDER = (JobStatus.COMPLETED, JobStatus.CACHED, JobStatus.DIVERGED, JobStatus.FAILED,
                  JobStatus.SKIPPED, JobStatus.SUBMITTED, JobStatus.WAITING)


@dataclass
class GridResult:
    """What happened: run name -> final status (completed, diverged, failed, skipped,
    cached; after ``detach``: submitted (queued or running on the launcher) and waiting
    (not submitted yet: it needs the α its tuning runs will choose)); ``problems`` one line
    per run that did not complete."""

    statuses: dict[str, str]
    problems: list[str]
    alphas: dict[str, tuple[float, dict[float, float]]]
    runs_dir: Path
    stale: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(s == status for s in self.statuses.values())

    @property
    def ok(self) -> bool:
        return not any(s == JobStatus.FAILED for s in self.statuses.values())


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler, `kill`) stops the grid like Ctrl-C: running runs checkpoint."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    old = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


class GridScheduler:
    """One invocation of a grid: the plan (optionally cut down by ``only``), the state of
    each run, and the loop that submits runs as soon as what they depend on has ended."""

    def __init__(self, spec: GridSpec, runs_dir: str | Path, *, run_fn: RunFn | None = None,
                 analysis_fn: RunFn | None = None, stream: TextIO | None = sys.stdout,
                 rerun_changed: bool = False,
                 only: Callable[[PlannedRun], bool] | None = None) -> None:
        self.spec, self.runs_dir = spec, Path(runs_dir)
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"grid: cannot create the runs folder {self.runs_dir} "
                            f"({exc.strerror or type(exc).__name__}); pass --out a writable "
                            "folder") from None
        # Looked up here, not bound at import, so a test can swap in a stand-in engine.
        self.run_fn = run_fn or jobs_module.train_job
        self.analysis_fn = analysis_fn or jobs_module.cka_job
        self.rerun_changed = rerun_changed
        full = plan_grid(spec, self.runs_dir)
        self.planned = {r.name: r for r in full}  # every run, also those ``only`` leaves out
        self.plan = [r for r in full if only(r)] if only is not None else full
        self.by_name = {r.name: r for r in self.plan}
        self.statuses: dict[str, str] = {}
        for r in self.plan:
            for d in r.deps + r.soft_deps:
                if d not in self.by_name:  # left out by ``only``: use what its directory holds
                    self.statuses[d] = dependency_status(self._run_dir(self.planned[d]))
        self.results: dict[str, dict[str, Any]] = {}
        self.problems: list[str] = []
        self.stale: list[str] = []
        self.alphas: dict[str, tuple[float, dict[float, float]]] = {}
        self.pending = list(self.plan)
        self.running: set[str] = set()
        self.submitted: dict[str, dict[str, Any]] = {}  # run -> the config its job got
        self.progress = Progress(len(self.plan), stream)
        self.detach = False

    def _run_dir(self, run: PlannedRun) -> RunDir:
        return RunDir(self.runs_dir / run.dir_name)

    # --- the loop ---------------------------------------------------------------------------

    def run(self, executor: Executor, *, detach: bool = False) -> GridResult:
        """Run every planned run that needs it on ``executor`` (shut down when this returns);
        an interrupt (Ctrl-C, SIGTERM) stops the running runs at a checkpoint (or leaves
        them to the cluster, as the executor was told) and is raised again, so that the
        next invocation resumes (or attaches to) them.

        ``detach`` (an executor with ``after_ok``): submit every run that can be submitted
        now, those whose dependencies are still running held by the launcher until they
        complete, and return without waiting; runs that need an α not chosen yet wait for
        the next invocation."""
        if detach and not executor.after_ok:
            raise UserError("--detach: this launcher cannot hold a run until the runs it "
                            "needs have completed; use --launcher slurm")
        self.detach = detach
        self.progress.say(f"grid '{self.spec.name}': {len(self.plan)} runs into "
                          f"{self.runs_dir} with {_slots(executor.slots)}")
        with _sigterm_as_interrupt():
            try:
                while self.pending or self.running:
                    progressed = self._submit_ready(executor)
                    if detach:
                        if not progressed:
                            break  # all that can be submitted is; the cluster runs it
                        continue
                    if self.running:
                        self._collect(executor.wait())
                        progressed = True
                    if not progressed:
                        self._skip_stuck()
            except KeyboardInterrupt:
                executor.interrupt()
                raise
            finally:
                executor.shutdown()
        return self._summary()

    def _submit_ready(self, executor: Executor) -> bool:
        """Submit pending runs whose dependencies have ended, in plan order, while the
        executor has free slots; True when any run left the queue."""
        progressed = False
        for run in list(self.pending):
            if len(self.running) >= max(1, executor.slots):
                break
            waiting = tuple(d for d in run.deps if self.statuses.get(d) is None)
            if any(self.statuses.get(d) is None for d in run.soft_deps) or (
                    waiting and not (self.detach and set(waiting) <= self.running)):
                continue  # still waiting
            self.pending.remove(run)
            progressed = True
            job = self._job_for(run, executor, waiting)
            if job is None:
                continue
            self.submitted[run.name] = job.config
            self.running.add(run.name)
            self.progress.start(run.name, job.resume)
            executor.submit(job)
        return progressed

    def _collect(self, outcomes: list[Outcome]) -> None:
        """Settle the runs that ended; put the ones handed back first in the queue."""
        again = []
        for o in outcomes:
            self.running.discard(o.name)
            if o.result is None:
                again.append(o)
            else:
                self._settle(o.name, o.result)
        for o in reversed(again):
            self.pending.insert(0, self.by_name[o.name])
            self.progress.requeue(o.name, o.why)

    def _skip_stuck(self) -> None:
        # Cannot happen after the topological sort; guards against an endless loop.
        for run in self.pending:
            self._finish(run.name, {"status": JobStatus.SKIPPED, "error": "dependency never ran"})
        self.pending.clear()

    # --- one run ------------------------------------------------------------------------------

    def _job_for(self, run: PlannedRun, executor: Executor,
                 after: tuple[str, ...] = ()) -> Job | None:
        """The job a ready run needs, or None when it needs none (cached, kept, skipped
        because a run it needs did not complete, failed before it could start, or already
        queued or running on the launcher: then followed as if submitted now). ``after``:
        dependencies still running (``detach``), which the launcher waits for."""
        bad = [d for d in run.deps
               if d not in after
               and self.statuses[d] not in (JobStatus.COMPLETED, JobStatus.CACHED)]
        if bad:
            self._finish(run.name, {"status": JobStatus.SKIPPED,
                                    "error": f"needs {bad[0]}, which {self.statuses[bad[0]]}"})
            return None
        # Before anything looks at (or cleans) its directory: a job of this run may still be
        # queued or running on the cluster, from an earlier `supkd grid`.
        how = executor.attach(run.name, self.runs_dir / run.dir_name,
                              analysis=run.kind == RunKind.CKA)
        if how is not None:
            self.submitted[run.name] = (dict(run.config) if run.kind == RunKind.CKA
                                        else self._final_config(run))
            self.running.add(run.name)
            self.progress.attached(run.name, how)
            return None
        try:
            prepared = self._prepare_cka(run) if run.kind == RunKind.CKA else self._prepare(run)
        except UserError as exc:
            self._finish(run.name, {"status": JobStatus.FAILED, "error": str(exc)})
            return None
        if prepared is None:
            return None
        cfg, resume = prepared
        fn = self.analysis_fn if run.kind == RunKind.CKA else self.run_fn
        return Job(run.name, fn, cfg, self.runs_dir / run.dir_name, resume, run.resources,
                   after)

    def _prepare_cka(self, run: PlannedRun) -> tuple[dict[str, Any], bool] | None:
        if cka_state(self._run_dir(run), run.config["teacher"]) == RunState.DONE:
            self._finish(run.name, {"status": JobStatus.COMPLETED}, "  (cached)")
            self.statuses[run.name] = JobStatus.CACHED
            return None
        return dict(run.config), False

    def _final_config(self, run: PlannedRun) -> dict[str, Any]:
        """The run's config with α chosen and ``spec_hash`` set."""
        cfg = copy.deepcopy(run.config)
        if run.soft_deps:
            chosen = self._alpha_for(run)
            cfg = _substitute(cfg, {"alpha": chosen}, set(), f"runs.{run.cell}.config")
            cfg["meta"]["alpha"] = chosen
        elif _refs(cfg) & {"alpha"}:
            raise ConfigError(f"grid entry '{run.cell}': uses ${{alpha}} but has no alphas")
        cfg["meta"]["spec_hash"] = spec_hash(cfg)
        return cfg

    def _prepare(self, run: PlannedRun) -> tuple[dict[str, Any], bool] | None:
        """The run's final config and whether it resumes, or None when its directory
        already holds what it would produce."""
        cfg = self._final_config(run)
        rd = self._run_dir(run)
        state, old = run_state(rd, cfg["meta"]["spec_hash"])
        if (state == RunState.STALE and self.rerun_changed) or state == RunState.RETRY:
            # A failed or partial run starts over in a clean directory (the engine refuses
            # to overwrite a run's files without resume, and its old checkpoint, if any,
            # belongs to another config or to a crash being retried).
            shutil.rmtree(rd.path, ignore_errors=True)
            state = RunState.NEW
        if state in (RunState.DONE, RunState.STALE):
            self._keep(run, state, old)
            return None
        return cfg, state == RunState.RESUME

    def _keep(self, run: PlannedRun, state: str, old: dict[str, Any]) -> None:
        """A run whose directory holds a finished result: ``done`` (this config) or
        ``stale`` (another config, kept without --rerun-changed)."""
        if state == RunState.STALE:
            self.stale.append(run.name)
        res = {**old, "status": old.get("status", JobStatus.COMPLETED)}
        self._finish(run.name, res, "  (kept: config changed)" if state == RunState.STALE else
                     "  (already done)")
        if res["status"] in (JobStatus.COMPLETED, JobStatus.IMPORTED):
            self.statuses[run.name] = JobStatus.CACHED

    def _alpha_for(self, run: PlannedRun) -> float:
        """α for a test-set run: the candidate whose tuning runs (its soft dependencies) had
        the best mean validation accuracy; chosen once per cell (or ``alpha_from`` cell)."""
        cell = run.config["meta"].get("alpha_from") or run.cell
        if cell not in self.alphas:
            scores: dict[float, list[float | None]] = {}
            for d in run.soft_deps:
                r = self.results.get(d)
                if r is None:  # not part of this invocation (``only``): read its directory
                    rec = load_run(self._run_dir(self.planned[d]))
                    r = rec.result if rec is not None else {}
                alpha = self.planned[d].alpha  # a tuning run's α is in the plan
                assert alpha is not None, d
                v = r.get("val_acc") if r.get("status") == JobStatus.COMPLETED else None
                scores.setdefault(alpha, []).append(v)
            chosen, means = choose_alpha(scores)
            self.alphas[cell] = (chosen, means)
            shown = ", ".join(f"{a:g}: {m:.2f}" if m == m else f"{a:g}: failed"
                              for a, m in means.items())
            self.progress.say(f"α for {cell}: {chosen:g} (validation accuracy {shown})")
        return self.alphas[cell][0]

    # --- ends -----------------------------------------------------------------------------------

    def _settle(self, name: str, res: dict[str, Any]) -> None:
        """A submitted run ended: leave a record when the job could not, then count it."""
        run = self.by_name[name]
        if run.kind != RunKind.CKA:
            record_failure(self._run_dir(run), self.submitted.get(name, run.config), res)
        self._finish(name, res)

    def _finish(self, name: str, res: dict[str, Any], note: str = "") -> None:
        self.statuses[name] = res.get("status", JobStatus.FAILED)
        self.results[name] = res
        status = self.statuses[name]
        if status not in (JobStatus.COMPLETED, JobStatus.CACHED, JobStatus.IMPORTED):
            why = res.get("error") or (f"diverged at step {res.get('diverged_step')}"
                                       if status == JobStatus.DIVERGED else "")
            self.problems.append(f"{name}: {status}" + (f" ({why})" if why else ""))
        self.progress.end(name, self.by_name[name].stage, res, note)

    def _summary(self) -> GridResult:
        for name in sorted(self.running):
            self.statuses[name] = JobStatus.SUBMITTED  # detached: on the launcher
        for run in self.pending:
            self.statuses[run.name] = JobStatus.WAITING
        if self.detach and (self.running or self.pending):
            self.progress.say(
                f"detached: {len(self.running)} run(s) queued or running on the launcher"
                + (f", {len(self.pending)} waiting for the α of their tuning runs"
                   if self.pending else "")
                + "; `supkd grid` with the same spec and launcher attaches to them (and "
                "submits the rest), `--status` shows where each run is")
        counts = [(k, sum(s == k for s in self.statuses.values())) for k in _SUMMARY_ORDER]
        self.progress.say(f"grid '{self.spec.name}': {len(self.plan)} runs: "
                          + ", ".join(f"{n} {k}" for k, n in counts if n))
        if self.stale:
            self.progress.say(f"kept {len(self.stale)} finished run(s) whose config differs "
                              f"from this grid (e.g. {self.stale[0]}); pass --rerun-changed "
                              "to redo them")
        return GridResult(self.statuses, self.problems, self.alphas, self.runs_dir, self.stale)


def _slots(slots: int) -> str:
    return f"{slots} job(s)" if slots < 10_000 else "no limit on jobs at once"


def run_grid(
    spec: GridSpec,
    runs_dir: str | Path,
    *,
    jobs: int | None = None,
    run_fn: RunFn | None = None,
    analysis_fn: RunFn | None = None,
    stream: TextIO | None = sys.stdout,
    rerun_changed: bool = False,
    only: Callable[[PlannedRun], bool] | None = None,
    launcher: str = "local",
    launcher_options: Mapping[str, Any] | None = None,
    detach: bool = False,
) -> GridResult:
    """Run every planned run that has not completed yet on ``launcher`` (``local``: ``jobs``
    at a time on this machine, default 1; ``slurm``, ``ray``: at most ``jobs`` at once,
    default no limit; see :mod:`supkd.experiments.grid.launchers`).

    ``run_fn(config_dict, run_dir, resume) -> result`` trains one run (default
    :func:`~supkd.experiments.grid.jobs.train_job`, the engine); ``analysis_fn`` computes one
    CKA (default :func:`~supkd.experiments.grid.jobs.cka_job`). Both must be picklable
    (module-level) unless they run in this process (local, ``jobs`` 1). Completed and
    diverged runs with the same config are skipped; a run whose directory has
    ``checkpoints/last.pt`` but no result is resumed; failed runs are retried; a run whose
    cluster job is still queued or running is followed, not submitted again. Runs whose
    result says completed for another config are kept (and listed in ``stale``) unless
    ``rerun_changed``, which deletes and reruns them. ``only`` keeps the planned runs it
    returns True for; the runs they depend on must then exist already.
    ``launcher_options``: fields of :class:`~.launchers.LauncherOptions` (``ray_address``,
    ``on_interrupt``, ``slurm``); ``detach``: see :meth:`GridScheduler.run`.
    """
    scheduler = GridScheduler(spec, runs_dir, run_fn=run_fn, analysis_fn=analysis_fn,
                              stream=stream, rerun_changed=rerun_changed, only=only)
    options = LauncherOptions(runs_dir=scheduler.runs_dir, grid=spec.name, jobs=jobs,
                              stream=stream, **dict(launcher_options or {}))
    return scheduler.run(build_launcher(launcher, options, scheduler.plan), detach=detach)
