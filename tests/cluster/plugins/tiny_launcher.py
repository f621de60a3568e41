"""A launcher from outside supkd, loaded with ``supkd --plugin``: this file is all of it.

``--launcher tiny`` runs each job in the driver's process, one at a time, and stamps each
run's launcher record with ``resources.tiny.tag`` (its own section: a non-empty string,
checked when the spec is read). Its ``live`` answers ``--status`` for the entries it
recorded: running while the recording process is alive.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from supkd.errors import ConfigError
from supkd.experiments.grid.executor import Job, Outcome
from supkd.experiments.grid.jobs import _call, launcher_info
from supkd.experiments.grid.launchers import register_launcher
from supkd.experiments.grid.launchers.records import write_launch
from supkd.experiments.grid.resources import section


def parse_tiny(raw: Any, where: str) -> dict[str, Any]:
    sec = section(raw, ("tag",), where)
    if "tag" in sec and not (isinstance(sec["tag"], str) and sec["tag"]):
        raise ConfigError(f"grid field '{where}.tag': expected a non-empty string, "
                          f"got {sec['tag']!r}")
    return sec


class TinyExecutor:
    slots = 1
    after_ok = False

    def __init__(self) -> None:
        self._ended: list[Outcome] = []

    def attach(self, name: str, run_dir: Path, *, analysis: bool = False) -> str | None:
        return None

    def submit(self, job: Job) -> None:
        write_launch(job.run_dir, job.name, {"launcher": "tiny", "pid": os.getpid()})
        tag = job.resources.section("tiny").get("tag", "untagged")
        rec = {**launcher_info("tiny", 1), "tag": tag}
        self._ended.append(Outcome(job.name, _call(job.fn, job.config, job.run_dir,
                                                   job.resume, threads=1, launcher=rec)))

    def wait(self) -> list[Outcome]:
        ended, self._ended = self._ended, []
        return ended

    def interrupt(self) -> None:
        pass

    def shutdown(self) -> None:
        pass

    @staticmethod
    def live(entries: Mapping[Any, dict[str, Any]]) -> dict[Any, tuple[str, str]]:
        out = {}
        for key, entry in entries.items():
            try:
                os.kill(int(entry["pid"]), 0)
            except (OSError, KeyError, TypeError, ValueError):
                continue
            out[key] = ("running", f"tiny launcher, pid {entry['pid']}")
        return out


@register_launcher("tiny", section=parse_tiny, live=TinyExecutor.live)
def tiny_launcher(options, plan) -> TinyExecutor:
    return TinyExecutor()
