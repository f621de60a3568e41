"""What a run directory tells the grid before a run (its state) and what the grid writes
there after one that ended before the engine could (a failure record).

Everything goes through :class:`~supkd.train.run_dir.RunDir` and the store: the run
directory is the only state a grid keeps between invocations.
"""

from __future__ import annotations

from typing import Any

from supkd.experiments.store import load_run
from supkd.train.run_dir import FINAL_STATUSES, RunDir, RunResult
from supkd.vocab import JobStatus, RunState, RunStatus


def run_state(rd: RunDir, want_hash: str) -> tuple[RunState, dict[str, Any]]:
    """(state, result) of a run directory: ``done`` (completed/diverged with this config, or
    imported), ``stale`` (finished with another config), ``resume`` (a checkpoint of this
    config and no final result), ``retry`` (failed, partial, or interrupted with another
    config), ``new``. UserError for a folder of the user's own files (never taken over, never
    cleared for a retry: :meth:`RunDir.claim`)."""
    rd.claim()
    rec = load_run(rd)
    if rec is None:
        return (RunState.RETRY if rd.path.exists() else RunState.NEW), {}
    if rec.status == RunStatus.IMPORTED:  # the user's own model stands in: never redo or delete it
        return RunState.DONE, rec.result
    same = rec.meta.get("spec_hash") in (None, want_hash)
    if rec.status in (RunStatus.COMPLETED, RunStatus.DIVERGED):
        return (RunState.DONE if same else RunState.STALE), rec.result
    return (RunState.RESUME if same and rec.has_checkpoint else RunState.RETRY), rec.result


def cka_state(rd: RunDir, teacher_dir: str) -> RunState:
    """``done`` when the student's cka.json was computed against ``teacher_dir``, ``new``
    when there is none, ``retry`` when it is unreadable or belongs to another teacher."""
    record, problem = rd.read_cka_record()
    if record is None:
        return RunState.RETRY if problem else RunState.NEW
    return RunState.DONE if record.teacher.get("path") == teacher_dir else RunState.RETRY


def dependency_status(rd: RunDir) -> JobStatus:
    """Status of a run this grid invocation does not run (left out by ``only``): ``cached``
    when its directory holds a finished, usable run, else ``missing``."""
    rec = load_run(rd)
    usable = rec is not None and rec.status in (RunStatus.COMPLETED, RunStatus.IMPORTED)
    return JobStatus.CACHED if usable else JobStatus.MISSING


def record_failure(rd: RunDir, cfg: dict[str, Any], res: dict[str, Any]) -> None:
    """A run that failed before the engine wrote its result.json still leaves a record (so
    the report lists it); the next ``supkd grid`` retries it."""
    if res.get("status") == RunStatus.COMPLETED or rd.result_path.is_file():
        return
    status = res.get("status", RunStatus.FAILED)
    rd.write_result(RunResult(
        status=RunStatus(status) if status in FINAL_STATUSES else RunStatus.FAILED,
        diverged_step=res.get("diverged_step"), error=res.get("error"),
        wall_time_s=res.get("wall_time_s"), seed=cfg.get("seed"), name=cfg.get("name"),
        meta=cfg.get("meta", {}), launcher=res.get("launcher"),
    ))
    if not rd.config_path.is_file():
        rd.write_config(cfg)
