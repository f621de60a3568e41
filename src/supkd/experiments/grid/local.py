"""``--jobs N``: the grid's jobs in a pool of N spawned worker processes on this machine.

When a worker dies (the kernel's OOM killer, a segfault in a native library),
``concurrent.futures`` marks the whole pool broken: every run in it fails with
``BrokenProcessPool``. :class:`LocalPoolExecutor` tells the dead worker's run (failed,
"worker died") from the runs that only shared its pool (handed back to be submitted again:
they resume from their checkpoints) and starts a new pool. Each worker notes which run it
is on in a tracker folder, written before the job starts, so that the note survives its
death.

Workers ignore SIGINT except while they run a job: one still importing torch, or idle,
would otherwise die of a Ctrl-C (the terminal's, or the one :meth:`interrupt` passes on)
with a traceback on the user's terminal. The parent spawns them with SIGINT ignored (a
disposition that survives ``exec``, and Python keeps it), and each job turns it on for
its own duration.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from supkd.experiments.grid.executor import Executor, InProcessExecutor, Job, Outcome
from supkd.experiments.grid.jobs import RunFn, _call, _worker_init, launcher_info
from supkd.vocab import RunStatus


def _interrupt_once(signum: int, frame: Any) -> None:
    """A job's SIGINT handler: the first one stops the job (KeyboardInterrupt: the engine
    saves its checkpoint); a second one (the terminal's Ctrl-C and the grid's own copy of
    it) must not interrupt that save."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def _pooled_call(tracker: str, name: str, fn: RunFn, config: dict[str, Any], run_dir: Path,
                 resume: bool, threads: int,
                 launcher: dict[str, Any] | None = None) -> dict[str, Any]:
    """:func:`_call` in a pool worker, after noting in ``tracker/<pid>`` which run this
    worker is on (written before the job starts, so it survives the worker's death) and,
    while the job runs, in ``tracker/<pid>.busy`` (the workers :meth:`interrupt` stops)."""
    busy = Path(tracker) / f"{os.getpid()}.busy"
    with contextlib.suppress(OSError):
        (Path(tracker) / str(os.getpid())).write_text(name)
    signal.signal(signal.SIGINT, _interrupt_once)
    try:
        with contextlib.suppress(OSError):
            busy.write_text(name)  # after the handler: a busy worker can be interrupted
        return _call(fn, config, run_dir, resume, threads=threads,
                     launcher={**launcher_info("local", threads), **(launcher or {})})
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        busy.unlink(missing_ok=True)


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored in this process for the block, so that a worker spawned in it starts
    with SIGINT ignored. Signal handlers belong to the main thread; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _worker_runs(tracker: Path) -> dict[int, str]:
    """pid -> the run that pool worker started last (see :func:`_pooled_call`)."""
    out = {}
    for f in tracker.iterdir():
        with contextlib.suppress(OSError, ValueError):
            out[int(f.name)] = f.read_text()
    return out


def _death(exitcode: int | None) -> str | None:
    """How a pool worker ended, when that is what broke the pool; None for a worker that is
    alive, exited normally (0) or was stopped by the pool itself (SIGTERM) after another
    worker broke it."""
    if exitcode is None or exitcode == 0 or exitcode == -signal.SIGTERM:
        return None
    if exitcode < 0:
        try:
            sig = signal.Signals(-exitcode).name
        except ValueError:
            sig = f"signal {-exitcode}"
        hint = " (the kernel's out-of-memory killer sends SIGKILL)" if sig == "SIGKILL" else ""
        return f"its process was killed by {sig}{hint}"
    return f"its process exited with code {exitcode}"


def _failed(why: str) -> dict[str, Any]:
    return {"status": RunStatus.FAILED, "error": f"worker died: {why}"}


class LocalPoolExecutor:
    """An :class:`~supkd.experiments.grid.executor.Executor` over a process pool of
    ``jobs`` spawned workers, each with ``cores // jobs`` intra-op threads (a run's
    ``resources.cpus``, when given, instead)."""

    after_ok = False

    def __init__(self, jobs: int) -> None:
        self.slots = jobs
        self._threads = max(1, (os.cpu_count() or 1) // jobs)
        self._tracker = Path(tempfile.mkdtemp(prefix="supkd-grid-workers-"))
        self._running: dict[cf.Future[dict[str, Any]], str] = {}
        self._ended: list[Outcome] = []  # settled by a recovery, reported by the next wait
        self._strikes: dict[str, int] = {}  # run -> pool breakages it was caught in
        # pid -> worker process of the current pool, kept from each submit: when the pool
        # breaks, its manager thread may already have dropped the dead worker from the pool's
        # own table, and the dead run would go unidentified (then every run of the pool took
        # a strike, and a second breakage failed innocent neighbours).
        self._procs: dict[int, Any] = {}
        self._pool: cf.ProcessPoolExecutor | None = self._new_pool()

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(
            max_workers=self.slots, mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_init, initargs=(self._threads,))

    def attach(self, name: str, run_dir: Path, *, analysis: bool = False) -> str | None:
        return None  # pool workers end with the driver that started them

    def submit(self, job: Job) -> None:
        assert self._pool is not None
        args = (str(self._tracker), job.name, job.fn, job.config, job.run_dir, job.resume,
                job.resources.threads(self._threads), job.launcher)
        try:
            with _sigint_ignored():  # the pool spawns its workers in submit
                fut = self._pool.submit(_pooled_call, *args)
        except BrokenProcessPool:
            # The pool broke since the last wait: its futures say which runs it took; this
            # one never started, so it goes to the new pool.
            self._recover()
            with _sigint_ignored():
                fut = self._pool.submit(_pooled_call, *args)
        self._procs.update(getattr(self._pool, "_processes", None) or {})
        self._running[fut] = job.name

    def wait(self, timeout: float | None = None) -> list[Outcome]:
        """The protocol's ``wait``; with ``timeout`` (a packed Slurm worker, which takes new
        runs into free slots meanwhile) it may return ``[]`` when nothing ended by then."""
        if self._running and not self._ended:
            done, _ = cf.wait(list(self._running), timeout=timeout,
                              return_when=cf.FIRST_COMPLETED)
            broken = False
            for fut in done:
                exc = fut.exception()
                if isinstance(exc, BrokenProcessPool):
                    broken = True  # handled below, with every other run of the pool
                    continue
                name = self._running.pop(fut)
                if isinstance(exc, KeyboardInterrupt):  # stopped at a checkpoint (SIGTERM)
                    self._ended.append(Outcome(name, None, "stopped at a checkpoint"))
                    continue
                self._ended.append(Outcome(name, fut.result() if exc is None
                                           else _failed(repr(exc))))
            if broken:
                self._recover()
        ended, self._ended = self._ended, []
        return ended

    def _recover(self) -> None:
        """A worker died and broke the pool: fail the dead worker's run, hand back the runs
        that only shared the pool (a run caught in two breakages fails: the likely culprit
        must not break a third pool), and start a new pool."""
        assert self._pool is not None
        procs = {**self._procs, **(getattr(self._pool, "_processes", None) or {})}
        self._procs = {}
        # Lets the pool finish terminating the other workers; then every future is done.
        self._pool.shutdown(wait=True, cancel_futures=True)
        owners = _worker_runs(self._tracker)
        exits = {owners[pid]: p.exitcode for pid, p in procs.items()
                 if pid in owners and _death(p.exitcode) is not None}
        # A broken pool SIGTERMs its other workers itself: a run whose worker ended that way
        # while another worker died otherwise (SIGKILL, a segfault, an exit code) only shared
        # the pool, and is handed back instead of being failed with the culprit.
        culprits = {n: c for n, c in exits.items() if c != -signal.SIGTERM} or exits
        dead = {name: _death(code) for name, code in culprits.items()}
        culprit = ", ".join(dead) or "an unidentified worker"
        requeued = []
        for fut in list(self._running):
            name = self._running.pop(fut)
            exc = None if fut.cancelled() else fut.exception()
            if not fut.cancelled() and exc is None:
                self._ended.append(Outcome(name, fut.result()))
            elif name in dead:
                self._ended.append(Outcome(name, _failed(str(dead[name]))))
            elif fut.cancelled() or isinstance(exc, BrokenProcessPool):
                self._strikes[name] = self._strikes.get(name, 0) + 1
                if self._strikes[name] >= 2:
                    self._ended.append(Outcome(name, _failed(
                        "the pool broke twice while this run was in it (cause not identified)")))
                else:
                    requeued.append(Outcome(name, None, "its worker pool broke when the "
                                                        f"worker of {culprit} died"))
            else:
                self._ended.append(Outcome(name, _failed(repr(exc))))
        self._ended.extend(requeued)
        self._pool = self._new_pool()

    def interrupt(self) -> None:
        """Pass the interrupt on to the workers that run a job (a terminal's Ctrl-C already
        reaches them; a SIGTERM to the grid does not), so each running run saves its
        checkpoint; then wait for them to stop. Runs not started are cancelled; a queued one
        a worker took meanwhile is interrupted in turn (polled, as workers take jobs)."""
        if self._pool is None:
            return
        for fut in self._running:
            fut.cancel()  # only succeeds for runs no worker has taken yet
        told: set[tuple[int, str]] = set()
        while not all(f.done() for f in self._running):
            for pid in list(getattr(self._pool, "_processes", None) or {}):
                try:
                    job = (pid, (self._tracker / f"{pid}.busy").read_text())
                except OSError:
                    continue  # starting, idle or between jobs: SIGINT would not stop a job
                if job not in told:
                    told.add(job)
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGINT)
            cf.wait(list(self._running), timeout=0.2)
        self._pool.shutdown(wait=True)
        self._pool = None

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        shutil.rmtree(self._tracker, ignore_errors=True)

    @staticmethod
    def live(entries: Mapping[Any, dict[str, Any]]) -> dict[Any, tuple[str, str]]:
        return {}  # pool workers end with the driver that started them


def local_executor(jobs: int) -> Executor:
    """The executor for ``--jobs N`` on this machine: a pool of N worker processes, or for
    N = 1 this process itself."""
    return LocalPoolExecutor(jobs) if jobs > 1 else InProcessExecutor()
