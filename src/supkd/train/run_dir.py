"""The run directory: the one module that knows its paths and writes its files.

A run directory is the only record of a run (DESIGN.md §1): a report is rebuilt from run
directories alone, a run resumes from its directory alone, and on a cluster it is the only
state shared between the driver and the workers. Layout::

    RUN/config.yaml            the resolved config (written when the run starts)
    RUN/metrics.jsonl          one JSON line per epoch
    RUN/result.json            the :class:`RunResult` record, once the run has ended
    RUN/model.pt               the final weights + spec (what teachers are loaded from)
    RUN/checkpoints/last.pt    everything a resumed run needs (+ best.pt when asked)
    RUN/cka.json               a KD student's layer-wise CKA against its teacher (the grid;
                               the one record of supkd.train.cka_record, as supkd cka's)
    RUN/launcher.json          the grid's cluster jobs of this run (Slurm job id, Ray job)
    RUN/tensorboard/           event files, with ``train.tensorboard: true``
    RUN/wandb/                 the W&B run's files, with ``train.wandb.project`` set

Every write is atomic (temporary file, fsync, rename; :mod:`supkd.utils.atomic`); reads are
tolerant (a missing file is ``None``, an unreadable one is reported, never raised), so that
one corrupt run never stops a report or a grid. The engine, the grid, ``supkd
import-teacher`` and the store all go through :class:`RunDir`; ``result.json`` has one
writer, :meth:`RunDir.write_result`, and one schema, :class:`RunResult`.

A folder becomes a run directory only when it is new, empty, or already a run
(:meth:`RunDir.claim`): a folder of the user's own files is never taken over, so its files
are neither overwritten nor mixed with a run's. ``config.yaml`` or ``result.json`` is the
first file any writer puts into a run directory, so those two writers check it. A run
directory named from a config value goes through :meth:`RunDir.under`, whose name rule
(:func:`supkd.utils.paths.check_path_name`) keeps it inside the folder given.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from supkd.errors import UserError
from supkd.train.cka_record import CkaRecord
from supkd.utils.atomic import (
    append_jsonl,
    atomic_write_json,
    atomic_write_text,
    atomic_write_yaml,
    is_temp_name,
    read_jsonl,
    sweep_stale_temps,
)
from supkd.utils.paths import check_path_name
from supkd.vocab import RunStatus

__all__ = ["FINAL_STATUSES", "LAUNCHER_ENV", "RUN_SECTIONS", "RunDir", "RunResult",
           "launcher_from_env"]

#: Statuses a ``result.json`` can hold. ``imported``: a teacher brought in by ``supkd
#: import-teacher`` (no accuracies; a finished run a grid uses as is, never retrains).
FINAL_STATUSES = tuple(s.value for s in RunStatus)

#: How a grid launcher tells the run where it runs: a JSON object (launcher name, Slurm job
#: id or Ray task id, host, GPUs, threads) in this environment variable, which the engine
#: copies into ``RunResult.launcher``. An environment variable, like torchrun's, so that it
#: reaches every DDP rank and the engine stays the one writer of ``result.json``.
LAUNCHER_ENV = "SUPKD_LAUNCHER"


def launcher_from_env() -> dict[str, Any] | None:
    """The launcher record of this process (:data:`LAUNCHER_ENV`), or None outside a grid
    launcher (or when the variable is not a JSON object)."""
    raw = os.environ.get(LAUNCHER_ENV)
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None

#: The sections every resolved run config has (``supkd.config.Config.to_dict()``): what
#: tells a run's ``config.yaml`` from a user's file of the same name.
RUN_SECTIONS = frozenset({"name", "seed", "data", "model", "optim", "schedule", "train", "task"})


@dataclass
class RunResult:
    """The record in ``result.json`` (accuracies in %, top-1 of the last epoch).

    Every field is always written (``null`` when it does not apply), so readers see one
    schema whichever writer (engine, grid, import-teacher) produced the file.
    """

    status: RunStatus  # a plain string is read as its RunStatus
    name: str | None = None
    task: str | None = None
    test_acc: float | None = None
    val_acc: float | None = None
    best_val_acc: float | None = None
    diverged_step: int | None = None  # first non-finite step, counted from 1
    error: str | None = None
    epochs: int | None = None
    steps: int | None = None
    wall_time_s: float | None = None
    seed: int | None = None
    seeds: dict[str, int] | None = None  # init, data, augment (supkd.train.seeding)
    meta: dict[str, Any] = field(default_factory=dict)
    device: str | None = None
    world_size: int | None = None
    versions: dict[str, Any] = field(default_factory=dict)
    metric: str | None = None
    replica_fingerprints: list[Any] | None = None  # DDP: every rank's parameter hash
    launcher: dict[str, Any] | None = None  # where it ran (grid launchers)
    # What the run saw: images per split and a fingerprint of the data (DataBundle.summary)
    data: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.status not in FINAL_STATUSES:
            raise ValueError(f"result status must be one of {FINAL_STATUSES}, got {self.status!r}")
        self.status = RunStatus(self.status)

    def to_dict(self) -> dict[str, Any]:
        """The plain record (the status as its word, so YAML and JSON writers take it)."""
        return {**dataclasses.asdict(self), "status": self.status.value}

    @classmethod
    def fields(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        """The record of a ``result.json`` (or a job's result dict); keys that are not
        fields are left out, a missing status reads as ``failed``."""
        known = {k: v for k, v in data.items() if k in cls.fields()}
        known.setdefault("status", RunStatus.FAILED)
        return cls(**known)

    # A result was a plain dict before it had a type: code that reads it with ``res["key"]``
    # or ``res.get("key")`` keeps working (read only).
    def __getitem__(self, key: str) -> Any:
        if key not in self.fields():
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self.fields() else default


def _read(path: Path, parse: Any, what: str) -> tuple[dict[str, Any] | None, str | None]:
    """(mapping, None), (None, None) when absent, or (None, problem) when unreadable."""
    if not path.is_file():
        return None, None
    try:
        data = parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        return None, f"{path.name}: unreadable ({exc.__class__.__name__})"
    if not isinstance(data, dict):
        return None, f"{path.name}: expected {what}"
    return data, None


class RunDir:
    """Paths and files of one run directory (nothing is created until something is written)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @classmethod
    def under(cls, root: str | os.PathLike[str], name: object, field: str) -> RunDir:
        """``RunDir(root / name)`` for a ``name`` taken from a config value (``field`` names
        it in the error): ConfigError unless ``name`` is one safe folder name."""
        return cls(Path(root) / check_path_name(name, field))

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    # --- paths ---------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def result_path(self) -> Path:
        return self.path / "result.json"

    @property
    def model_path(self) -> Path:
        return self.path / "model.pt"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoints / "best.pt"

    @property
    def cka_path(self) -> Path:
        return self.path / "cka.json"

    @property
    def launcher_path(self) -> Path:
        return self.path / "launcher.json"

    @property
    def tensorboard(self) -> Path:
        """Where ``train.tensorboard: true`` writes its event files."""
        return self.path / "tensorboard"

    @property
    def wandb(self) -> Path:
        """Where ``train.wandb`` keeps the W&B run (its id and wandb's own files)."""
        return self.path / "wandb"

    def is_run(self) -> bool:
        """A folder is a run directory when it has a config.yaml or a result.json."""
        return self.config_path.is_file() or self.result_path.is_file()

    def has_checkpoint(self) -> bool:
        return self.last_checkpoint.is_file()

    def holds_run(self, *, strict: bool = True) -> bool:
        """Whether this folder is a supkd run: it has a ``result.json`` or a
        ``checkpoints/last.pt``, or a ``config.yaml``
        that is a resolved run config (a mapping with every section :data:`RUN_SECTIONS`).
        A ``config.yaml`` of the user's own (the file given to ``supkd train``, kept in the
        folder also given as ``--out``) is not one, so it is never overwritten.
        ``strict=False``: any ``config.yaml`` counts (a folder that a job has started to
        write, after its writer claimed it)."""
        if self.result_path.is_file() or self.has_checkpoint():
            return True
        if not strict:
            return self.config_path.is_file()
        config, problem = self.read_config()
        return problem is None and config is not None and set(config) >= RUN_SECTIONS

    def foreign_entries(self, *, strict: bool = True) -> list[str]:
        """The names in this folder when it holds files but is not a run (:meth:`holds_run`):
        the user's own folder. [] when it is absent, empty, a run, or holds only the
        temporary files of interrupted supkd writes (``strict``: :meth:`holds_run`'s)."""
        if not self.path.is_dir() or self.holds_run(strict=strict):
            return []
        try:
            names = [e.name for e in os.scandir(self.path)]
        except OSError:
            return []  # unreadable: the write that follows reports it
        # launcher.json: a grid launcher records its cluster job before the job writes the
        # run's config.yaml (the run is then queued, not yet started).
        own = (is_temp_name(n) or n.startswith(".import-") or n == self.launcher_path.name
               or self._only_temps(n) for n in names)
        return sorted(n for n, ours in zip(names, own) if not ours)

    def _only_temps(self, name: str) -> bool:
        """``checkpoints/`` holding nothing but temporary files: a run killed while writing
        its first checkpoint (its config.yaml write may have been cut short too)."""
        folder = self.path / name
        if name != self.checkpoints.name or not folder.is_dir() or folder.is_symlink():
            return False
        try:
            return all(is_temp_name(e.name) for e in os.scandir(folder))
        except OSError:
            return False

    def claim(self, *, strict: bool = True) -> None:
        """UserError unless this folder may hold a run: it is absent, empty, or a run
        directory already (whether that run may be continued is the caller's question).

        Every writer claims a folder (strictly) before its first write; ``write_result``
        checks again loosely (``strict=False``), as the last guard."""
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"run directory {self.path}: exists and is not a folder")
        foreign = self.foreign_entries(strict=strict)
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3
                                              else "")
            raise UserError(
                f"run directory {self.path}: is not a supkd run but holds files ({shown}); "
                "it is left untouched: choose a new or empty folder (--out)"
            )

    # --- reading (tolerant) ------------------------------------------------------------------

    def read_config(self) -> tuple[dict[str, Any] | None, str | None]:
        """(config dict, None), (None, None) when absent, (None, problem) when unreadable."""
        return _read(self.config_path, yaml.safe_load, "a mapping")

    def read_result(self) -> tuple[dict[str, Any] | None, str | None]:
        """(result dict, None), (None, None) when absent, (None, problem) when unreadable."""
        return _read(self.result_path, json.loads, "a JSON object")

    def read_cka(self) -> tuple[dict[str, Any] | None, str | None]:
        """(cka.json dict, None), (None, None) when absent, (None, problem) when unreadable."""
        return _read(self.cka_path, json.loads, "a JSON object")

    def read_cka_record(self) -> tuple[CkaRecord | None, str | None]:
        """:meth:`read_cka` as a :class:`~supkd.train.cka_record.CkaRecord`; a JSON object
        that is not one is a problem, not an error."""
        data, problem = self.read_cka()
        if data is None:
            return None, problem
        try:
            return CkaRecord.from_dict(data), None
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            return None, f"{self.cka_path.name}: {exc}"

    def write_cka(self, record: CkaRecord) -> Path:
        """Write ``cka.json`` (the one schema of :mod:`supkd.train.cka_record`). Not a
        claim on the folder: ``supkd cka --out`` writes into a folder the user named."""
        return atomic_write_json(self.cka_path, record.to_dict())

    def read_metrics(self) -> list[dict[str, Any]]:
        """The epoch records (a line cut short by a crash is skipped)."""
        return read_jsonl(self.metrics_path)

    # --- writing (atomic) ----------------------------------------------------------------

    def write_config(self, config: dict[str, Any]) -> Path:
        """Write ``config.yaml`` (UserError when the folder is someone else's: :meth:`claim`)."""
        self.claim()
        return atomic_write_yaml(self.config_path, config)

    def write_result(self, result: RunResult) -> dict[str, Any]:
        """Write ``result.json``; returns the dict written (UserError when the folder is
        someone else's: :meth:`claim`)."""
        self.claim(strict=False)
        record = result.to_dict()
        atomic_write_json(self.result_path, record)
        return record

    def remove_result(self) -> None:
        """Drop ``result.json`` (a failed run being retried)."""
        self.result_path.unlink(missing_ok=True)

    def append_metrics(self, record: dict[str, Any]) -> None:
        append_jsonl(self.metrics_path, record)

    def rewrite_metrics(self, records: list[dict[str, Any]]) -> Path:
        text = "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in records)
        return atomic_write_text(self.metrics_path, text)

    def sweep_temps(self) -> list[Path]:
        """Remove temporary files of writes a SIGKILL cut short (only call when no other
        process writes here, e.g. when the run starts)."""
        return sweep_stale_temps(self.path)
