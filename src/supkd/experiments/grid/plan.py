"""The plan: a :class:`GridSpec` expanded into :class:`PlannedRun` s in dependency order.

Each planned run carries what the scheduler needs to know about it (stage, seed, α, the
runs it depends on, the run directory it writes), so that nothing is ever read back out of a
run's name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from supkd.config import merge
from supkd.errors import ConfigError
from supkd.experiments.grid.resources import Resources, merge_resources, parse_resources
from supkd.experiments.grid.spec import Cell, GridSpec
from supkd.vocab import RunKind, Stage

_REF = re.compile(r"\$\{([^{}]+)\}")


@dataclass
class PlannedRun:
    """One run (or one CKA analysis) of the grid."""

    name: str
    cell: str
    stage: Stage | None  # the protocol stage of a training run; None for an analysis
    seed: int
    deps: list[str]  # runs that must have completed
    soft_deps: list[str] = field(default_factory=list)  # runs that must have ended (α tuning)
    config: dict[str, Any] = field(default_factory=dict)  # may still hold ${alpha}
    alpha: float | None = None  # fixed α (None: chosen from soft_deps, or no α at all)
    # The folder under the runs folder this writes into: the run's own, or for a CKA
    # analysis (which writes cka.json) its student's.
    dir_name: str = ""
    resources: Resources = field(default_factory=Resources)  # what its job asks for
    kind: RunKind = RunKind.TRAIN  # what its job does: train, or write a cka.json record

    def __post_init__(self) -> None:
        self.dir_name = self.dir_name or self.name
        self.kind = RunKind(self.kind)
        self.stage = Stage(self.stage) if self.stage is not None else None

    @property
    def label(self) -> str:
        """What a plan listing shows: the stage of a training run, else the kind."""
        return str(self.stage) if self.kind is RunKind.TRAIN else str(self.kind)


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
    """``kd_gram-s0`` for a test-set run, ``kd_gram-tune-a0.5-s0`` for a tuning run.

    Names are for people and folders only: the grid reads a run's stage, seed and α from
    its :class:`PlannedRun` and its run record, never back out of the name."""
    return f"{cell}-tune-a{alpha:g}-s{seed}" if tune else f"{cell}-s{seed}"


def _run_refs(spec: GridSpec, cell: Cell, seed: int, cfg: dict[str, Any], runs_dir: Path,
              values: dict[str, Any]) -> set[str]:
    """Resolve the ``${run:NAME[@SEED]}`` references of a cell into ``values`` (the run
    directory of that run); returns the names of the runs referenced (the dependencies)."""
    deps: set[str] = set()
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
    return deps


def _run_meta(spec: GridSpec, cell: Cell, seed: int, stage: Stage, alpha: float | None,
              values: dict[str, Any]) -> dict[str, Any]:
    """The ``meta`` a run's config carries (keys in :mod:`supkd.experiments.protocols`)."""
    meta = _substitute(cell.meta, {**values, "alpha": alpha}, set(), f"runs.{cell.entry}.meta")
    meta = {**meta, "grid": spec.name, "entry": cell.entry, "cell": cell.name,
            "stage": str(stage), "seed": seed}
    if spec.published and "published" not in meta:
        meta["published"] = spec.published
    if alpha is not None:
        meta["alpha"] = alpha
    if cell.alphas is not None:
        meta["alpha_candidates"] = list(cell.alphas)
    return meta


def _expand(spec: GridSpec, runs_dir: Path, cell: Cell, seed: int, stage: Stage,
            alpha: float | None) -> PlannedRun:
    """One run of a cell: its config with every substitution made except a ``${alpha}``
    still to be chosen by tuning, and its (soft) dependencies."""
    tune = stage == Stage.TUNE
    name = run_name(cell.name, seed, alpha, tune)
    cfg = merge(merge(spec.base, cell.config), spec.tune_config if tune else spec.final_config)
    values: dict[str, Any] = {"seed": seed, **cell.vars}
    keep = set()
    if alpha is not None:
        values["alpha"] = alpha
    elif cell.alphas is not None or cell.alpha_from is not None:
        keep.add("alpha")  # chosen after tuning
    deps = _run_refs(spec, cell, seed, cfg, runs_dir, values)
    cfg = _substitute(cfg, values, keep, f"runs.{cell.entry}.config")
    meta = _run_meta(spec, cell, seed, stage, alpha, values)
    cfg["name"] = name
    cfg["seed"] = seed
    cfg["meta"] = meta
    soft: list[str] = []
    if stage == Stage.FINAL and alpha is None and "alpha" in keep:
        src = spec.cells[cell.alpha_from] if cell.alpha_from else cell
        assert src.alphas is not None
        if src.tuned:
            soft = [run_name(src.name, s, a, True) for a in src.alphas for s in spec.tune_seeds]
            meta["alpha_candidates"] = list(src.alphas)
            if cell.alpha_from:
                meta["alpha_from"] = src.name
    resources = parse_resources(merge_resources(spec.resources, cell.resources),
                                f"runs.{cell.entry}.resources")
    return PlannedRun(name, cell.name, stage, seed, sorted(deps), soft, cfg, alpha,
                      resources=resources)


def _cell_runs(spec: GridSpec, runs_dir: Path, cell: Cell) -> list[PlannedRun]:
    """A cell's tuning runs (one per α candidate and tune seed), then its test-set runs."""
    out = []
    if cell.tuned:
        for seed in spec.tune_seeds:
            if seed not in cell.seeds:
                raise ConfigError(f"grid entry '{cell.entry}': tune seed {seed} is not "
                                  f"among its seeds {cell.seeds}")
        for a in cell.alphas or []:
            for seed in spec.tune_seeds:
                out.append(_expand(spec, runs_dir, cell, seed, Stage.TUNE, a))
    for seed in cell.seeds:
        fixed = None
        src = spec.cells[cell.alpha_from] if cell.alpha_from else cell
        if src.alphas is not None and not src.tuned:
            fixed = src.alphas[0]
        out.append(_expand(spec, runs_dir, cell, seed, Stage.FINAL, fixed))
    return out


def _cka_runs(spec: GridSpec, runs_dir: Path) -> list[PlannedRun]:
    """One CKA analysis per student run whose seed the teacher also runs."""
    if spec.cka is None:
        return []
    out = []
    options = {k: v for k, v in spec.cka.__dict__.items() if k not in ("teacher", "students")}
    # The analysis runs on CPU in one process (jobs.cka_job): the default resources without
    # GPUs or DDP ranks.
    resources = dataclasses.replace(parse_resources(spec.resources, "resources"), gpus=0.0,
                                    nodes=1, tasks_per_node=None)
    for student in spec.cka.students:
        for seed in spec.cells[student].seeds:
            if seed not in spec.cells[spec.cka.teacher].seeds:
                continue
            s_run, t_run = run_name(student, seed), run_name(spec.cka.teacher, seed)
            out.append(PlannedRun(
                f"{s_run}/cka", student, None, seed, [s_run, t_run],
                config={"student": str(runs_dir / s_run), "teacher": str(runs_dir / t_run),
                        **options},
                dir_name=s_run, resources=resources, kind=RunKind.CKA))
    return out


def plan_grid(spec: GridSpec, runs_dir: str | Path) -> list[PlannedRun]:
    """Expand the spec into runs in dependency order (every run after the runs it needs;
    otherwise in file order, tuning runs before the test-set runs of their cell)."""
    runs_dir = Path(runs_dir).resolve()
    planned: dict[str, PlannedRun] = {}
    for cell in spec.cells.values():
        for r in _cell_runs(spec, runs_dir, cell):
            planned[r.name] = r
    for r in _cka_runs(spec, runs_dir):
        planned[r.name] = r
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
