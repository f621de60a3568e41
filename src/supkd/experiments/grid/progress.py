"""The grid's progress lines: ``[3/50] completed supcon_teacher-s0  12.7s  | 61s elapsed``."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, TextIO

from supkd.vocab import JobStatus, Stage


class Progress:
    """Counts ended runs and prints one line per start, end and requeue (nothing when
    ``stream`` is None)."""

    def __init__(self, total: int, stream: TextIO | None) -> None:
        self.total, self.done, self.stream = total, 0, stream
        self.running: list[str] = []
        self.t0 = time.perf_counter()

    def say(self, text: str) -> None:
        if self.stream is not None:
            print(text, file=self.stream, flush=True)

    def start(self, name: str, resume: bool) -> None:
        self.running.append(name)
        others = [r for r in self.running if r != name]
        self.say(f"[{self.done}/{self.total}] start     {name}"
                 + (" (resuming from its checkpoint)" if resume else "")
                 + (f"  | also running: {', '.join(others)}" if others else ""))

    def attached(self, name: str, how: str) -> None:
        """A run already queued or running on the launcher (an earlier ``supkd grid``)."""
        self.running.append(name)
        self.say(f"[{self.done}/{self.total}] attached  {name}  ({how})")

    def requeue(self, name: str, why: str) -> None:
        if name in self.running:
            self.running.remove(name)
        self.say(f"[{self.done}/{self.total}] requeued  {name}  ({why}; it will start again)")

    def end(self, name: str, stage: str, res: Mapping[str, Any], note: str = "") -> None:
        """One run ended; ``stage`` says which accuracy it is judged on (a tuning run on
        validation accuracy, every other run on test accuracy)."""
        if name in self.running:
            self.running.remove(name)
        self.done += 1
        status = res.get("status", "?")
        elapsed = time.perf_counter() - self.t0
        self.say(f"[{self.done}/{self.total}] {status:<9} {name}{_detail(stage, res)}"
                 f"{_took(res, note)}{note}  | {elapsed:.0f}s elapsed")


def _detail(stage: str, res: Mapping[str, Any]) -> str:
    """The accuracy, diverged step or error shown after a run's name."""
    status = res.get("status", "?")
    if status == JobStatus.DIVERGED:
        return f"  (diverged at step {res.get('diverged_step')})"
    if status in (JobStatus.FAILED, JobStatus.SKIPPED) and res.get("error"):
        return f"  ({str(res['error']).splitlines()[0][:120]})"
    keys = (("test_acc", "test"), ("val_acc", "val"))
    if stage == Stage.TUNE:  # tuning runs are judged on validation accuracy
        keys = keys[::-1]
    for key, label in keys:
        v = res.get(key)
        if isinstance(v, int | float) and v == v:
            return f"  {label} {v:.2f}%"
    return ""


def _took(res: Mapping[str, Any], note: str) -> str:
    wall = res.get("wall_time_s")
    return f"  {float(wall):.1f}s" if isinstance(wall, int | float) and note == "" else ""
