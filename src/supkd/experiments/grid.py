"""``supkd grid CONFIG``: many runs from one spec, in dependency order, resumable.

A grid spec (YAML) declares a ``base`` run config and named entries; each entry expands,
by its ``matrix`` and the grid's ``seeds``, into run configs (plain dicts for
:func:`supkd.config.load_config`) written as ``RUNS_DIR/<run-name>/``::

    grid: demo                    # name, written to every run's meta.grid
    published: cifar10            # which block of the paper's numbers the report shows
    seeds: [0, 1]
    base: {data: {name: digits}, train: {epochs: 8}}     # every run starts from this
    final: {config: {data: {val_fraction: 0.0}}}         # test-set runs: full training split
    tune: {seeds: [0], config: {data: {val_fraction: 0.1}}}   # α tuning: train minus val
    runs:
      supcon_teacher: {config: {task: {name: supcon}}}
      supcon_teacher_linear:
        config: {task: {name: linear, encoder: "${run:supcon_teacher}"}}
        meta: {table: table1, role: teacher, kind: supcon}
      kd_{method}:
        matrix: {method: [cosine, gram]}    # or {method: {gram: {config:, meta:, alphas:}}}
        alphas: [0.5, 2.0]                         # >1 value: tuned on the validation split
        config: {task: {name: distill, teacher: "${run:supcon_teacher_linear}",
                        loss: "${method}", alpha: "${alpha}"}}
        meta: {table: table2, method: "${method}", teacher_kind: supcon}
      other: {alpha_from: kd_gram, ...}            # reuse the α chosen for another cell
    cka: {teacher: supcon_teacher_linear, students: [kd_cosine, kd_gram]}

Substitutions in strings: ``${run:NAME}`` the run directory of entry NAME for the same seed
(``${run:NAME@3}``: seed 3), ``${seed}``, ``${alpha}`` and each matrix variable; a string
that is exactly one ``${...}`` takes the value's own type. ``${run:...}`` references are the
dependencies: a run starts when the runs it names have completed, and is skipped (recorded,
the grid goes on) when one of them diverged or failed.

Each run's config gets ``meta`` (see :mod:`supkd.experiments.protocols`) and a
``spec_hash`` of its config, so that a later ``supkd grid`` skips runs whose result.json says
completed (or diverged) for the same config, resumes interrupted ones from
``checkpoints/last.pt``, and retries failed ones. ``--jobs N`` runs N runs at once in
separate processes (one ``concurrent.futures.ProcessPoolExecutor`` of spawned workers).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import copy
import hashlib
import itertools
import json
import multiprocessing
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from supkd.config import merge, read_yaml
from supkd.errors import ConfigError, RunDiverged, UserError
from supkd.experiments.protocols import choose_alpha
from supkd.experiments.store import load_run
from supkd.train.run_dir import FINAL_STATUSES, RunDir, RunResult
from supkd.utils.atomic import atomic_write_json

_REF = re.compile(r"\$\{([^{}]+)\}")
_GRID_KEYS = {"grid", "published", "seeds", "base", "final", "tune", "runs", "cka",
              "description"}
_ENTRY_KEYS = {"config", "meta", "matrix", "alphas", "alpha_from", "seeds"}
_CKA_KEYS = {"teacher", "students", "split", "batch_size", "max_batches", "pool", "stages"}

RunFn = Callable[[dict[str, Any], Path, bool], dict[str, Any]]


# ---------------------------------------------------------------------------------------
# Spec
# ---------------------------------------------------------------------------------------


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"grid field '{where}': expected a mapping, got {value!r}")
    return dict(value)


def _seed_list(value: Any, where: str) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value
    ):
        raise ConfigError(f"grid field '{where}': expected a non-empty list of seeds >= 0, "
                          f"got {value!r}")
    if len(set(value)) != len(value):
        raise ConfigError(f"grid field '{where}': seeds repeat in {value!r}")
    return list(value)


def _alpha_list(value: Any, where: str) -> list[float]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(f"grid field '{where}': expected a non-empty list of numbers, "
                          f"got {value!r}")
    out = []
    for a in value:
        try:
            a = float(a)
        except (TypeError, ValueError):
            raise ConfigError(f"grid field '{where}': expected numbers, got {a!r}") from None
        if not a >= 0:
            raise ConfigError(f"grid field '{where}': expected α >= 0, got {a}")
        out.append(a)
    if len(set(out)) != len(out):
        raise ConfigError(f"grid field '{where}': candidates repeat in {value!r}")
    return out


@dataclass
class Cell:
    """One expanded grid entry (an entry with one set of matrix values)."""

    name: str
    entry: str
    config: dict[str, Any]
    meta: dict[str, Any]
    vars: dict[str, Any]
    seeds: list[int]
    alphas: list[float] | None = None
    alpha_from: str | None = None

    @property
    def tuned(self) -> bool:
        return self.alphas is not None and len(self.alphas) > 1


@dataclass
class CkaSpec:
    teacher: str
    students: list[str]
    split: str = "test"
    batch_size: int = 256
    max_batches: int | None = None
    pool: bool = False
    stages: list[str] | None = None


@dataclass
class GridSpec:
    """A parsed grid spec. ``cells`` keep the order of the file."""

    name: str
    seeds: list[int]
    base: dict[str, Any]
    final_config: dict[str, Any]
    tune_config: dict[str, Any]
    tune_seeds: list[int]
    cells: dict[str, Cell]
    published: str | None = None
    cka: CkaSpec | None = None
    source: str = "<dict>"


def _expand_matrix(name: str, matrix: Mapping[str, Any]) -> list[tuple[str, dict[str, Any],
                                                                       dict[str, Any]]]:
    """Entry name template x matrix -> [(cell name, vars, extra {config, meta})]."""
    axes: list[list[tuple[str, Any, dict[str, Any]]]] = []
    for var, values in matrix.items():
        where = f"runs.{name}.matrix.{var}"
        if isinstance(values, Mapping):
            opts = []
            for v, extra in values.items():
                extra = _mapping(extra, f"{where}.{v}")
                bad = set(extra) - {"config", "meta", "alphas"}
                if bad:
                    raise ConfigError(f"grid field '{where}.{v}': unknown key "
                                      f"'{sorted(bad)[0]}' (expected config, meta, alphas)")
                opts.append((var, v, extra))
            axes.append(opts)
        elif isinstance(values, list) and values:
            axes.append([(var, v, {}) for v in values])
        else:
            raise ConfigError(f"grid field '{where}': expected a non-empty list or mapping")
    out = []
    for combo in itertools.product(*axes) if axes else [()]:
        vars_ = {var: v for var, v, _ in combo}
        extra: dict[str, Any] = {}
        for _, _, e in combo:
            extra = merge(extra, e)
        try:
            cell_name = name.format(**vars_)
        except (KeyError, IndexError, ValueError):
            raise ConfigError(f"grid entry '{name}': its name uses a variable that is not in "
                              f"its matrix ({', '.join(vars_) or 'no matrix'})") from None
        out.append((cell_name, vars_, extra))
    return out


def parse_grid(raw: Mapping[str, Any], source: str = "<dict>") -> GridSpec:
    """Validate a grid spec dict (see the module docstring); raises ``ConfigError``."""
    raw = _mapping(raw, "<root>")
    bad = set(raw) - _GRID_KEYS
    if bad:
        raise ConfigError(f"grid {source}: unknown key '{sorted(bad)[0]}' "
                          f"(expected {', '.join(sorted(_GRID_KEYS))})")
    runs = _mapping(raw.get("runs"), "runs")
    if not runs:
        raise ConfigError(f"grid {source}: 'runs' is empty (expected at least one entry)")
    seeds = _seed_list(raw.get("seeds", [0]), "seeds")
    final = _mapping(raw.get("final"), "final")
    tune = _mapping(raw.get("tune"), "tune")
    for where, sec, allowed in (("final", final, {"config"}), ("tune", tune, {"config", "seeds"})):
        extra = set(sec) - allowed
        if extra:
            raise ConfigError(f"grid field '{where}': unknown key '{sorted(extra)[0]}' "
                              f"(expected {', '.join(sorted(allowed))})")
    cells: dict[str, Cell] = {}
    for name, entry in runs.items():
        name = str(name)
        entry = _mapping(entry, f"runs.{name}")
        extra = set(entry) - _ENTRY_KEYS
        if extra:
            raise ConfigError(f"grid field 'runs.{name}': unknown key '{sorted(extra)[0]}' "
                              f"(expected {', '.join(sorted(_ENTRY_KEYS))})")
        if "alphas" in entry and "alpha_from" in entry:
            raise ConfigError(f"grid field 'runs.{name}': give alphas or alpha_from, not both")
        alphas = _alpha_list(entry["alphas"], f"runs.{name}.alphas") if "alphas" in entry else None
        eseeds = _seed_list(entry["seeds"], f"runs.{name}.seeds") if "seeds" in entry else seeds
        for cell_name, vars_, ext in _expand_matrix(name, _mapping(entry.get("matrix"),
                                                                   f"runs.{name}.matrix")):
            if not re.fullmatch(r"[A-Za-z0-9_.+-]+", cell_name):
                raise ConfigError(f"grid entry '{name}': run name {cell_name!r} may only use "
                                  "letters, digits and _ . + -")
            if cell_name in cells:
                raise ConfigError(f"grid entry '{name}': run name '{cell_name}' is used twice")
            cfg = merge(_mapping(entry.get("config"), f"runs.{name}.config"), ext.get("config"))
            meta = merge(_mapping(entry.get("meta"), f"runs.{name}.meta"), ext.get("meta"))
            calphas = alphas
            if "alphas" in ext:  # per-value candidates (losses differ in scale)
                calphas = _alpha_list(ext["alphas"], f"runs.{name}.matrix: alphas of {cell_name}")
            cells[cell_name] = Cell(cell_name, name, cfg, meta, vars_, eseeds, calphas,
                                    entry.get("alpha_from"))
    for c in cells.values():
        if c.alpha_from is not None and c.alpha_from not in cells:
            raise ConfigError(f"grid field 'runs.{c.entry}.alpha_from': no run named "
                              f"'{c.alpha_from}' (expected one of {', '.join(cells)})")
        if c.alpha_from is not None and cells[c.alpha_from].alphas is None:
            raise ConfigError(f"grid field 'runs.{c.entry}.alpha_from': '{c.alpha_from}' has "
                              "no alphas")
    cka = None
    if raw.get("cka") is not None:
        ck = _mapping(raw["cka"], "cka")
        extra = set(ck) - _CKA_KEYS
        if extra:
            raise ConfigError(f"grid field 'cka': unknown key '{sorted(extra)[0]}' "
                              f"(expected {', '.join(sorted(_CKA_KEYS))})")
        teacher = ck.get("teacher")
        students = ck.get("students") or []
        if teacher not in cells:
            raise ConfigError(f"grid field 'cka.teacher': expected a run name of this grid, "
                              f"got {teacher!r}")
        for s in students:
            if s not in cells:
                raise ConfigError(f"grid field 'cka.students': no run named {s!r}")
        cka = CkaSpec(str(teacher), [str(s) for s in students], str(ck.get("split", "test")),
                      int(ck.get("batch_size", 256)), ck.get("max_batches"),
                      bool(ck.get("pool", False)), ck.get("stages"))
    return GridSpec(
        name=str(raw.get("grid", Path(source).stem if source != "<dict>" else "grid")),
        seeds=seeds, base=_mapping(raw.get("base"), "base"),
        final_config=_mapping(final.get("config"), "final.config"),
        tune_config=_mapping(tune.get("config"), "tune.config"),
        tune_seeds=_seed_list(tune.get("seeds", seeds[:1]), "tune.seeds"),
        cells=cells, published=raw.get("published"), cka=cka, source=source,
    )


def read_grid_yaml(path: str | Path) -> dict[str, Any]:
    """A grid spec file as a dict, with ``extends: other.yaml`` (relative to the file)
    resolved by the one YAML reader: the other spec is the starting point, this file's
    sections are merged into it key by key (``runs`` by entry name)."""
    return read_yaml(path, what="grid file")


def load_grid(path: str | Path) -> GridSpec:
    """Read and validate a grid spec file."""
    return parse_grid(read_grid_yaml(path), str(path))


# ---------------------------------------------------------------------------------------
# Plan
# ---------------------------------------------------------------------------------------


@dataclass
class PlannedRun:
    """One run (or one CKA analysis) of the grid."""

    name: str
    cell: str
    stage: str  # final | tune | cka
    seed: int
    deps: list[str]  # runs that must have completed
    soft_deps: list[str] = field(default_factory=list)  # runs that must have ended (α tuning)
    config: dict[str, Any] = field(default_factory=dict)  # may still hold ${alpha}
    alpha: float | None = None  # fixed α (None: chosen from soft_deps, or no α at all)


def _substitute(obj: Any, values: Mapping[str, Any], keep: set[str], where: str) -> Any:
    """Replace ``${name}`` in every string of ``obj`` (names in ``keep`` are left as is)."""
    if isinstance(obj, Mapping):
        return {k: _substitute(v, values, keep, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, list):
        return [_substitute(v, values, keep, f"{where}[{i}]") for i, v in enumerate(obj)]
    if not isinstance(obj, str):
        return obj

    def lookup(key: str) -> Any:
        key = key.strip()
        if key in keep:
            return None
        if key not in values:
            raise ConfigError(f"grid field '{where}': unknown substitution ${{{key}}} "
                              f"(known: {', '.join(sorted(values))})")
        return values[key]

    whole = _REF.fullmatch(obj)
    if whole and whole.group(1).strip() not in keep:
        return lookup(whole.group(1))
    return _REF.sub(lambda m: m.group(0) if m.group(1).strip() in keep
                    else str(lookup(m.group(1))), obj)


def _refs(obj: Any) -> set[str]:
    if isinstance(obj, Mapping):
        return set().union(*(_refs(v) for v in obj.values())) if obj else set()
    if isinstance(obj, list):
        return set().union(*(_refs(v) for v in obj)) if obj else set()
    if isinstance(obj, str):
        return {m.group(1).strip() for m in _REF.finditer(obj)}
    return set()


def run_name(cell: str, seed: int, alpha: float | None = None, tune: bool = False) -> str:
    """``kd_gram-s0`` for a test-set run, ``kd_gram-tune-a0.5-s0`` for a tuning run."""
    return f"{cell}-tune-a{alpha:g}-s{seed}" if tune else f"{cell}-s{seed}"


def plan_grid(spec: GridSpec, runs_dir: str | Path) -> list[PlannedRun]:
    """Expand the spec into runs in dependency order (every run after the runs it needs;
    otherwise in file order, tuning runs before the test-set runs of their cell)."""
    runs_dir = Path(runs_dir).resolve()
    planned: dict[str, PlannedRun] = {}

    def expand(cell: Cell, seed: int, stage: str, alpha: float | None) -> PlannedRun:
        tune = stage == "tune"
        name = run_name(cell.name, seed, alpha, tune)
        cfg = merge(merge(spec.base, cell.config),
                     spec.tune_config if tune else spec.final_config)
        deps: set[str] = set()
        values: dict[str, Any] = {"seed": seed, **cell.vars}
        keep = set()
        if alpha is not None:
            values["alpha"] = alpha
        elif cell.alphas is not None or cell.alpha_from is not None:
            keep.add("alpha")  # chosen after tuning
        for ref in _refs(cfg) | _refs(cell.meta):
            if not ref.startswith("run:"):
                continue
            target, _, pinned = ref[4:].partition("@")
            target = target.strip()
            if target not in spec.cells:
                raise ConfigError(f"grid entry '{cell.entry}': ${{{ref}}} names no run of "
                                  f"this grid (known: {', '.join(spec.cells)})")
            tseed = int(pinned) if pinned.strip() else seed
            if tseed not in spec.cells[target].seeds:
                raise ConfigError(
                    f"grid entry '{cell.entry}': ${{{ref}}} needs seed {tseed} of "
                    f"'{target}', which runs seeds {spec.cells[target].seeds}; pin one with "
                    f"${{run:{target}@SEED}}")
            dep = run_name(target, tseed)
            deps.add(dep)
            values[ref] = str(runs_dir / dep)
        cfg = _substitute(cfg, values, keep, f"runs.{cell.entry}.config")
        meta = _substitute(cell.meta, {**values, "alpha": alpha}, set(),
                           f"runs.{cell.entry}.meta")
        meta = {**meta, "grid": spec.name, "entry": cell.entry, "cell": cell.name,
                "stage": stage, "seed": seed}
        if spec.published and "published" not in meta:
            meta["published"] = spec.published
        if alpha is not None:
            meta["alpha"] = alpha
        if cell.alphas is not None:
            meta["alpha_candidates"] = list(cell.alphas)
        cfg["name"] = name
        cfg["seed"] = seed
        cfg["meta"] = meta
        soft: list[str] = []
        if stage == "final" and alpha is None and "alpha" in keep:
            src = spec.cells[cell.alpha_from] if cell.alpha_from else cell
            assert src.alphas is not None
            if src.tuned:
                soft = [run_name(src.name, s, a, True) for a in src.alphas
                        for s in spec.tune_seeds]
                meta["alpha_candidates"] = list(src.alphas)
                if cell.alpha_from:
                    meta["alpha_from"] = src.name
        return PlannedRun(name, cell.name, stage, seed, sorted(deps), soft, cfg, alpha)

    for cell in spec.cells.values():
        if cell.tuned:
            for seed in spec.tune_seeds:
                if seed not in cell.seeds:
                    raise ConfigError(f"grid entry '{cell.entry}': tune seed {seed} is not "
                                      f"among its seeds {cell.seeds}")
            for a in cell.alphas or []:
                for seed in spec.tune_seeds:
                    r = expand(cell, seed, "tune", a)
                    planned[r.name] = r
        for seed in cell.seeds:
            fixed = None
            src = spec.cells[cell.alpha_from] if cell.alpha_from else cell
            if src.alphas is not None and not src.tuned:
                fixed = src.alphas[0]
            r = expand(cell, seed, "final", fixed)
            planned[r.name] = r
    if spec.cka is not None:
        for student in spec.cka.students:
            for seed in spec.cells[student].seeds:
                if seed not in spec.cells[spec.cka.teacher].seeds:
                    continue
                s_run, t_run = run_name(student, seed), run_name(spec.cka.teacher, seed)
                planned[f"{s_run}/cka"] = PlannedRun(
                    f"{s_run}/cka", student, "cka", seed, [s_run, t_run],
                    config={"student": str(runs_dir / s_run), "teacher": str(runs_dir / t_run),
                            **{k: v for k, v in spec.cka.__dict__.items()
                               if k not in ("teacher", "students")}})
    return _toposort(planned)


def _toposort(planned: dict[str, PlannedRun]) -> list[PlannedRun]:
    order: list[PlannedRun] = []
    state: dict[str, int] = {}

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise ConfigError("grid: runs depend on each other in a cycle: "
                              + " -> ".join((*chain, name)))
        state[name] = 1
        for d in planned[name].deps + planned[name].soft_deps:
            if d not in planned:
                raise ConfigError(f"grid: run '{name}' needs '{d}', which the grid does not run")
            visit(d, (*chain, name))
        state[name] = 2
        order.append(planned[name])

    for name in planned:
        visit(name, ())
    return order


def spec_hash(config: Mapping[str, Any]) -> str:
    """Hash of a run's requested config (without the hash itself)."""
    cfg = dict(config)
    # The grid's name is bookkeeping: grids that extend one another share runs.
    cfg["meta"] = {k: v for k, v in (cfg.get("meta") or {}).items()
                   if k not in ("spec_hash", "grid")}
    text = json.dumps(cfg, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------
# Execution
# ---------------------------------------------------------------------------------------


def train_job(config: dict[str, Any], run_dir: Path, resume: bool) -> dict[str, Any]:
    """Run one training run in this process with the engine (``supkd.train.run``)."""
    from supkd.train import load_run_config as load_config
    from supkd.train import run as train_run

    _apply_threads()
    cfg = load_config(config)
    return train_run(cfg, run_dir, resume=resume, quiet=True)


def cka_job(config: dict[str, Any], out_dir: Path, resume: bool) -> dict[str, Any]:
    """Layer-wise CKA (Fig. 2) of a student against its teacher on the student's data split
    ``config["split"]``, written to the student's run directory as ``cka.json``.

    ``config``: ``student``, ``teacher`` (run directories), ``split``, ``batch_size``,
    ``max_batches``, ``pool``, ``stages`` (see the grid's ``cka`` section).
    """
    from supkd.analysis.layerwise import layerwise_cka
    from supkd.data import build_data, make_loader
    from supkd.models.files import load_model
    from supkd.train import load_run_config as load_config

    _apply_threads()
    student_dir, teacher_dir = Path(config["student"]), Path(config["teacher"])
    cfg = load_config(student_dir / "config.yaml")
    bundle = build_data(cfg.data, cfg.seed)
    split = str(config.get("split", "test"))
    loader = make_loader(bundle, split, int(config.get("batch_size", 256)), train=False,
                         augment="none", device="cpu", seed=cfg.seed)
    t0 = time.perf_counter()
    res = layerwise_cka(load_model(teacher_dir), load_model(student_dir), loader,
                        stages=config.get("stages"), pool=bool(config.get("pool", False)),
                        max_batches=config.get("max_batches"), device="cpu")
    out = {**res.to_dict(), "teacher_dir": str(teacher_dir), "student_dir": str(student_dir),
           "split": split, "meta": cfg.meta, "wall_time_s": time.perf_counter() - t0}
    atomic_write_json(out_dir / "cka.json", out)
    return {"status": "completed", "wall_time_s": out["wall_time_s"]}


_THREADS_ENV = "SUPKD_GRID_THREADS"


def _worker_init(threads: int) -> None:
    # N processes on C cores: C/N intra-op threads each, or they oversubscribe the cores.
    # Set through the environment (read when torch is first imported, by the job) so that a
    # worker that never trains (or a test's stand-in) does not pay for importing torch.
    os.environ[_THREADS_ENV] = str(max(1, threads))
    os.environ["OMP_NUM_THREADS"] = str(max(1, threads))


def _apply_threads() -> None:
    if os.environ.get(_THREADS_ENV):
        import torch

        torch.set_num_threads(int(os.environ[_THREADS_ENV]))


def _call(fn: RunFn, config: dict[str, Any], run_dir: Path, resume: bool) -> dict[str, Any]:
    """Run one job and turn every way it can end into a result dict (never raises, so one
    failure never stops the grid)."""
    t0 = time.perf_counter()
    try:
        res = fn(config, run_dir, resume)
        res = dict(res or {})
        res.setdefault("status", "completed")
    except RunDiverged as exc:
        res = {"status": "diverged", "diverged_step": exc.step, "error": str(exc)}
    except KeyboardInterrupt:
        raise
    except UserError as exc:
        res = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    except Exception as exc:  # a bug in one run must not stop the others
        res = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    res.setdefault("wall_time_s", time.perf_counter() - t0)
    return res


@dataclass
class GridResult:
    """What happened: run name -> final status (completed, diverged, failed, skipped,
    cached); ``problems`` one line per run that did not complete."""

    statuses: dict[str, str]
    problems: list[str]
    alphas: dict[str, tuple[float, dict[float, float]]]
    runs_dir: Path
    stale: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(s == status for s in self.statuses.values())

    @property
    def ok(self) -> bool:
        return not any(s == "failed" for s in self.statuses.values())


class _Progress:
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

    def requeue(self, name: str, culprit: str) -> None:
        if name in self.running:
            self.running.remove(name)
        self.say(f"[{self.done}/{self.total}] requeued  {name}  (its worker pool broke when "
                 f"the worker of {culprit} died; it will start again)")

    def end(self, name: str, res: Mapping[str, Any], note: str = "") -> None:
        if name in self.running:
            self.running.remove(name)
        self.done += 1
        status = res.get("status", "?")
        acc = ""
        keys = (("test_acc", "test"), ("val_acc", "val"))
        if "-tune-" in name:  # tuning runs are judged on validation accuracy
            keys = keys[::-1]
        for key, label in keys:
            v = res.get(key)
            if isinstance(v, int | float) and v == v:
                acc = f"  {label} {v:.2f}%"
                break
        if status == "diverged":
            acc = f"  (diverged at step {res.get('diverged_step')})"
        if status in ("failed", "skipped") and res.get("error"):
            acc = f"  ({str(res['error']).splitlines()[0][:120]})"
        wall = res.get("wall_time_s")
        took = f"  {float(wall):.1f}s" if isinstance(wall, int | float) and note == "" else ""
        elapsed = time.perf_counter() - self.t0
        self.say(f"[{self.done}/{self.total}] {status:<9} {name}{acc}{took}{note}"
                 f"  | {elapsed:.0f}s elapsed")


def _existing(run_dir: Path, want_hash: str) -> tuple[str, dict[str, Any]]:
    """(state, result) of a run directory: ``done`` (completed/diverged with this config),
    ``stale`` (finished with another config), ``resume`` (a checkpoint of this config and
    no final result), ``retry`` (failed, partial, or interrupted with another config),
    ``new``."""
    rec = load_run(run_dir)
    if rec is None:
        return ("retry" if run_dir.exists() else "new"), {}
    if rec.status == "imported":  # the user's own model stands in: never redo or delete it
        return "done", rec.result
    same = rec.meta.get("spec_hash") in (None, want_hash)
    if rec.status in ("completed", "diverged"):
        return ("done" if same else "stale"), rec.result
    return ("resume" if same and rec.has_checkpoint else "retry"), rec.result


def _cka_state(run: PlannedRun, runs_dir: Path) -> str:
    out = runs_dir / run.name.split("/")[0] / "cka.json"
    if not out.is_file():
        return "new"
    try:
        data = json.loads(out.read_text())
    except (OSError, json.JSONDecodeError):
        return "retry"
    return "done" if data.get("teacher_dir") == run.config["teacher"] else "retry"


def run_grid(
    spec: GridSpec,
    runs_dir: str | Path,
    *,
    jobs: int = 1,
    run_fn: RunFn | None = None,
    analysis_fn: RunFn | None = None,
    stream: TextIO | None = sys.stdout,
    rerun_changed: bool = False,
    only: Callable[[PlannedRun], bool] | None = None,
) -> GridResult:
    """Run every planned run that has not completed yet, ``jobs`` at a time.

    ``run_fn(config_dict, run_dir, resume) -> result`` trains one run (default
    :func:`train_job`, the engine); ``analysis_fn`` computes one CKA (default
    :func:`cka_job`). Both must be picklable (module-level) when ``jobs > 1``. Completed
    and diverged runs with the same config are skipped; a run whose directory has
    ``checkpoints/last.pt`` but no result is resumed; failed runs are retried. Runs whose
    result says completed for another config are kept (and listed in ``stale``) unless
    ``rerun_changed``, which deletes and reruns them.
    """
    runs_dir = Path(runs_dir)
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"grid: cannot create the runs folder {runs_dir} "
                        f"({exc.strerror or type(exc).__name__}); pass --out a writable "
                        "folder") from None
    run_fn = run_fn or train_job
    analysis_fn = analysis_fn or cka_job
    plan = plan_grid(spec, runs_dir)
    if only is not None:
        keep = {r.name for r in plan if only(r)}
        plan = [r for r in plan if r.name in keep]
    by_name = {r.name: r for r in plan}
    statuses: dict[str, str] = {}
    for r in plan:
        for d in r.deps + r.soft_deps:
            if d not in by_name:  # left out by ``only``: use what its directory holds
                rec = load_run(runs_dir / d)
                statuses[d] = ("cached" if rec is not None
                               and rec.status in ("completed", "imported") else "missing")
    results: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    stale: list[str] = []
    alphas: dict[str, tuple[float, dict[float, float]]] = {}
    prog = _Progress(len(plan), stream)
    prog.say(f"grid '{spec.name}': {len(plan)} runs into {runs_dir} with {jobs} job(s)")

    def finish(name: str, res: dict[str, Any], note: str = "") -> None:
        statuses[name] = res.get("status", "failed")
        results[name] = res
        if statuses[name] not in ("completed", "cached", "imported"):
            why = res.get("error") or (f"diverged at step {res.get('diverged_step')}"
                                       if statuses[name] == "diverged" else "")
            problems.append(f"{name}: {statuses[name]}" + (f" ({why})" if why else ""))
        prog.end(name, res, note)

    def prepare(run: PlannedRun) -> tuple[dict[str, Any], bool] | None:
        """Final config and resume flag, or None when the run needs nothing (cached)."""
        if run.stage == "cka":
            state = _cka_state(run, runs_dir)
            if state == "done":
                finish(run.name, {"status": "completed"}, "  (cached)")
                statuses[run.name] = "cached"
                return None
            return dict(run.config), False
        cfg = copy.deepcopy(run.config)
        if run.soft_deps:
            cell = run.config["meta"].get("alpha_from") or run.cell
            if cell not in alphas:
                scores: dict[float, list[float | None]] = {}
                for d in run.soft_deps:
                    r = results.get(d)
                    if r is None:  # not part of this invocation (``only``): read its directory
                        rec = load_run(runs_dir / d)
                        r = rec.result if rec is not None else {}
                    a = float(_alpha_of(d))
                    v = r.get("val_acc") if r.get("status") == "completed" else None
                    scores.setdefault(a, []).append(v)
                chosen, means = choose_alpha(scores)
                alphas[cell] = (chosen, means)
                shown = ", ".join(f"{a:g}: {m:.2f}" if m == m else f"{a:g}: failed"
                                  for a, m in means.items())
                prog.say(f"α for {cell}: {chosen:g} (validation accuracy {shown})")
            chosen = alphas[cell][0]
            cfg = _substitute(cfg, {"alpha": chosen}, set(), f"runs.{run.cell}.config")
            cfg["meta"]["alpha"] = chosen
        elif _refs(cfg) & {"alpha"}:
            raise ConfigError(f"grid entry '{run.cell}': uses ${{alpha}} but has no alphas")
        cfg["meta"]["spec_hash"] = spec_hash(cfg)
        run_dir = runs_dir / run.name
        state, old = _existing(run_dir, cfg["meta"]["spec_hash"])
        if (state == "stale" and rerun_changed) or state == "retry":
            # A failed or partial run starts over in a clean directory (the engine refuses
            # to overwrite a run's files without resume, and its old checkpoint, if any,
            # belongs to another config or to a crash being retried).
            shutil.rmtree(run_dir, ignore_errors=True)
            state = "new"
        if state in ("done", "stale"):
            if state == "stale":
                stale.append(run.name)
            res = {**old, "status": old.get("status", "completed")}
            finish(run.name, res, "  (kept: config changed)" if state == "stale" else
                   "  (already done)")
            if res["status"] in ("completed", "imported"):
                statuses[run.name] = "cached"
            return None
        return cfg, state == "resume"

    pending = list(plan)
    running: dict[Any, str] = {}
    submitted: dict[str, dict[str, Any]] = {}  # run -> the config its worker got
    strikes: dict[str, int] = {}  # run -> pool breakages it was caught in, cause unknown
    old_term = None
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (a scheduler, `kill`) stops the grid like Ctrl-C: workers checkpoint.
        old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    executor: cf.ProcessPoolExecutor | None = None
    tracker: Path | None = None
    if jobs > 1:
        # Each worker notes here which run it is on, so that when one dies (OOM kill,
        # segfault) the grid can tell its run from the runs it took down with the pool.
        tracker = Path(tempfile.mkdtemp(prefix="supkd-grid-workers-"))
        threads = max(1, (os.cpu_count() or 1) // jobs)

        def new_pool() -> cf.ProcessPoolExecutor:
            return cf.ProcessPoolExecutor(
                max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init, initargs=(threads,))

        executor = new_pool()

    def settle(name: str, res: dict[str, Any]) -> None:
        run = by_name[name]
        _record_failure(run, runs_dir / name.split("/")[0], submitted.get(name, run.config), res)
        finish(name, res)

    def recover() -> None:
        """A worker died and ``concurrent.futures`` broke the whole pool: fail the run of the
        dead worker, put the runs that only shared the pool back in the queue (they resume
        from their checkpoints), and start a new pool."""
        nonlocal executor
        assert executor is not None and tracker is not None
        procs = dict(getattr(executor, "_processes", None) or {})
        # Lets the pool finish terminating the other workers; then every future is done.
        executor.shutdown(wait=True, cancel_futures=True)
        owners = _worker_runs(tracker)
        dead = {owners[pid]: _death(p.exitcode) for pid, p in procs.items()
                if pid in owners and _death(p.exitcode) is not None}
        requeued = []
        for fut in list(running):
            name = running.pop(fut)
            exc = None if fut.cancelled() else fut.exception()
            if not fut.cancelled() and exc is None:
                settle(name, fut.result())
            elif name in dead:
                settle(name, {"status": "failed", "error": f"worker died: {dead[name]}"})
            elif fut.cancelled() or isinstance(exc, BrokenProcessPool):
                strikes[name] = strikes.get(name, 0) + 1
                if strikes[name] >= 2:  # the likely culprit: do not let it break a third pool
                    settle(name, {"status": "failed", "error": "worker died: the pool broke "
                                  "twice while this run was in it (cause not identified)"})
                else:
                    requeued.append(name)
            else:
                settle(name, {"status": "failed", "error": f"worker died: {exc!r}"})
        for name in reversed(requeued):
            pending.insert(0, by_name[name])
            prog.requeue(name, ", ".join(dead) or "an unidentified worker")
        executor = new_pool()

    try:
        while pending or running:
            progressed = False
            for run in list(pending):
                if len(running) >= max(1, jobs):
                    break
                hard = [statuses.get(d) for d in run.deps]
                soft = [statuses.get(d) for d in run.soft_deps]
                if any(s is None for s in hard + soft):
                    continue  # still waiting
                pending.remove(run)
                progressed = True
                bad = [d for d in run.deps if statuses[d] not in ("completed", "cached")]
                if bad:
                    finish(run.name, {"status": "skipped",
                                      "error": f"needs {bad[0]}, which {statuses[bad[0]]}"})
                    continue
                try:
                    prepared = prepare(run)
                except UserError as exc:
                    finish(run.name, {"status": "failed", "error": str(exc)})
                    continue
                if prepared is None:
                    continue
                cfg, resume = prepared
                fn = analysis_fn if run.stage == "cka" else run_fn
                target = runs_dir / run.name.split("/")[0]
                submitted[run.name] = cfg
                if executor is None:
                    prog.start(run.name, resume)
                    settle(run.name, _call(fn, cfg, target, resume))
                    continue
                try:
                    fut = executor.submit(_pooled_call, str(tracker), run.name, fn, cfg,
                                          target, resume)
                except BrokenProcessPool:
                    # The pool broke since the last wait: its futures say which runs it
                    # took; this one never started.
                    pending.insert(0, run)
                    if not running:
                        recover()
                    break
                prog.start(run.name, resume)
                running[fut] = run.name
            if running:
                done, _ = cf.wait(list(running), return_when=cf.FIRST_COMPLETED)
                broken = False
                for fut in done:
                    exc = fut.exception()
                    if isinstance(exc, BrokenProcessPool):
                        broken = True  # handled below, with every other run of the pool
                        continue
                    name = running.pop(fut)
                    settle(name, fut.result() if exc is None else
                           {"status": "failed", "error": f"worker died: {exc!r}"})
                if broken:
                    recover()
                progressed = True
            if not progressed and pending and not running:
                # Cannot happen after the topological sort; guard against an endless loop.
                for run in pending:
                    finish(run.name, {"status": "skipped", "error": "dependency never ran"})
                pending.clear()
    except KeyboardInterrupt:
        if executor is not None:
            # Pass the interrupt on to the workers (a terminal's Ctrl-C already reaches them;
            # a SIGTERM to this process does not), so each running run saves its checkpoint
            # and the next `supkd grid` resumes it; then wait for them to stop.
            for proc in list((getattr(executor, "_processes", None) or {}).values()):
                with contextlib.suppress(OSError):
                    os.kill(proc.pid, signal.SIGINT)
            executor.shutdown(wait=True, cancel_futures=True)
            executor = None
        raise
    finally:
        if executor is not None:
            executor.shutdown(wait=True)
        if tracker is not None:
            shutil.rmtree(tracker, ignore_errors=True)
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    prog.say(f"grid '{spec.name}': {len(plan)} runs: "
             + ", ".join(f"{sum(s == k for s in statuses.values())} {k}"
                         for k in ("completed", "cached", "diverged", "failed", "skipped")
                         if any(s == k for s in statuses.values())))
    if stale:
        prog.say(f"kept {len(stale)} finished run(s) whose config differs from this grid "
                 f"(e.g. {stale[0]}); pass --rerun-changed to redo them")
    return GridResult(statuses, problems, alphas, runs_dir, stale)


def _pooled_call(tracker: str, name: str, fn: RunFn, config: dict[str, Any], run_dir: Path,
                 resume: bool) -> dict[str, Any]:
    """:func:`_call` in a pool worker, after noting in ``tracker/<pid>`` which run this
    worker is on (written before the job starts, so it survives the worker's death)."""
    with contextlib.suppress(OSError):
        (Path(tracker) / str(os.getpid())).write_text(name)
    return _call(fn, config, run_dir, resume)


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


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _alpha_of(tune_run: str) -> float:
    """α of a tuning run from its name (``cell-tune-a<α>-s<seed>``, see :func:`run_name`)."""
    m = re.search(r"-tune-a([^-]+(?:e-\d+)?)-s\d+$", tune_run)
    if m is None:
        raise ValueError(f"not a tuning run name: {tune_run!r}")
    return float(m.group(1))


def _record_failure(run: PlannedRun, run_dir: Path, cfg: dict[str, Any],
                    res: dict[str, Any]) -> None:
    """A run that failed before the engine wrote its result.json still leaves a record (so
    the report lists it); the next ``supkd grid`` retries it."""
    rd = RunDir(run_dir)
    if run.stage == "cka" or res.get("status") == "completed" or rd.result_path.is_file():
        return
    status = res.get("status", "failed")
    rd.write_result(RunResult(
        status=status if status in FINAL_STATUSES else "failed",
        diverged_step=res.get("diverged_step"), error=res.get("error"),
        wall_time_s=res.get("wall_time_s"), seed=cfg.get("seed"), name=cfg.get("name"),
        meta=cfg.get("meta", {}),
    ))
    if not rd.config_path.is_file():
        rd.write_config(cfg)
