"""A grid spec: parse and validate the YAML (or dict) into a :class:`GridSpec`.

The format is described in :mod:`supkd.experiments.grid`. Every problem is a
``ConfigError`` naming the field (``runs.kd_gram.alphas``) and what was expected.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from supkd.config import merge, read_yaml
from supkd.errors import ConfigError
from supkd.experiments.grid.resources import parse_resources
from supkd.utils.paths import check_path_name

_GRID_KEYS = {"grid", "published", "seeds", "base", "final", "tune", "runs", "cka",
              "description", "resources", "teachers"}
_ENTRY_KEYS = {"config", "meta", "matrix", "alphas", "alpha_from", "seeds", "resources"}
_VALUE_KEYS = {"config", "meta", "alphas", "resources"}  # of one matrix value
_CKA_KEYS = {"teacher", "students", "split", "batch_size", "max_batches", "pool", "stages"}


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"grid field '{where}': expected a mapping, got {value!r}")
    return dict(value)


def _unknown_keys(section: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = set(section) - allowed
    if extra:
        raise ConfigError(f"grid field '{where}': unknown key '{sorted(extra)[0]}' "
                          f"(expected {', '.join(sorted(allowed))})")


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
        if not (a >= 0 and math.isfinite(a)):
            raise ConfigError(f"grid field '{where}': expected a finite α >= 0, got {a}")
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
    # The entry's and its matrix value's ``resources`` merged (checked, still a mapping:
    # the plan lays it over the spec's default; see :mod:`.resources`).
    resources: dict[str, Any] = field(default_factory=dict)

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
    resources: dict[str, Any] = field(default_factory=dict)  # every run's default
    #: ``${teacher:NAME}`` -> a teacher: a run folder (e.g. an imported one) or ``${run:CELL}``
    teachers: dict[str, str] = field(default_factory=dict)


def _teachers(value: Any) -> dict[str, str]:
    teachers = _mapping(value, "teachers")
    for name, where in teachers.items():
        if not isinstance(where, str) or not where.strip():
            raise ConfigError(f"grid field 'teachers.{name}': expected a run folder or "
                              f"'${{run:NAME}}', got {where!r}")
    return {str(k): v for k, v in teachers.items()}


def _resource_layer(value: Any, where: str) -> dict[str, Any]:
    """One layer of ``resources`` (checked on its own, so that an error names the layer it
    is in); the merged layers are checked again by the plan."""
    layer = _mapping(value, where)
    parse_resources(layer, where)
    return layer


def _matrix_axis(name: str, var: str, values: Any) -> list[tuple[str, Any, dict[str, Any]]]:
    """One matrix variable's options: [(var, value, extra {config, meta, alphas})]."""
    where = f"runs.{name}.matrix.{var}"
    if isinstance(values, Mapping):
        opts = []
        for v, extra in values.items():
            extra = _mapping(extra, f"{where}.{v}")
            bad = set(extra) - _VALUE_KEYS
            if bad:
                raise ConfigError(f"grid field '{where}.{v}': unknown key '{sorted(bad)[0]}' "
                                  f"(expected {', '.join(sorted(_VALUE_KEYS))})")
            if "resources" in extra:
                _resource_layer(extra["resources"], f"{where}.{v}.resources")
            opts.append((var, v, extra))
        return opts
    if isinstance(values, list) and values:
        return [(var, v, {}) for v in values]
    raise ConfigError(f"grid field '{where}': expected a non-empty list or mapping")


def _expand_matrix(name: str, matrix: Mapping[str, Any]) -> list[tuple[str, dict[str, Any],
                                                                       dict[str, Any]]]:
    """Entry name template x matrix -> [(cell name, vars, extra {config, meta})]."""
    axes = [_matrix_axis(name, var, values) for var, values in matrix.items()]
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


def _entry_cells(name: str, entry: dict[str, Any], seeds: list[int],
                 cells: dict[str, Cell]) -> None:
    """Expand one ``runs`` entry into ``cells`` (checked: names unique and well formed)."""
    _unknown_keys(entry, _ENTRY_KEYS, f"runs.{name}")
    if "alphas" in entry and "alpha_from" in entry:
        raise ConfigError(f"grid field 'runs.{name}': give alphas or alpha_from, not both")
    alphas = _alpha_list(entry["alphas"], f"runs.{name}.alphas") if "alphas" in entry else None
    eseeds = _seed_list(entry["seeds"], f"runs.{name}.seeds") if "seeds" in entry else seeds
    for cell_name, vars_, ext in _expand_matrix(name, _mapping(entry.get("matrix"),
                                                               f"runs.{name}.matrix")):
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+", cell_name):
            raise ConfigError(f"grid entry '{name}': run name {cell_name!r} may only use "
                              "letters, digits and _ . + -")
        check_path_name(cell_name, f"grid entry '{name}': run name")
        if cell_name in cells:
            raise ConfigError(f"grid entry '{name}': run name '{cell_name}' is used twice")
        cfg = merge(_mapping(entry.get("config"), f"runs.{name}.config"), ext.get("config"))
        meta = merge(_mapping(entry.get("meta"), f"runs.{name}.meta"), ext.get("meta"))
        res = merge(_resource_layer(entry.get("resources"), f"runs.{name}.resources"),
                    ext.get("resources"))
        calphas = alphas
        if "alphas" in ext:  # per-value candidates (losses differ in scale)
            calphas = _alpha_list(ext["alphas"], f"runs.{name}.matrix: alphas of {cell_name}")
        cells[cell_name] = Cell(cell_name, name, cfg, meta, vars_, eseeds, calphas,
                                entry.get("alpha_from"), res)


def _check_alpha_from(cells: dict[str, Cell]) -> None:
    for c in cells.values():
        if c.alpha_from is not None and c.alpha_from not in cells:
            raise ConfigError(f"grid field 'runs.{c.entry}.alpha_from': no run named "
                              f"'{c.alpha_from}' (expected one of {', '.join(cells)})")
        if c.alpha_from is not None and cells[c.alpha_from].alphas is None:
            raise ConfigError(f"grid field 'runs.{c.entry}.alpha_from': '{c.alpha_from}' has "
                              "no alphas")


def _parse_cka(raw: Any, cells: dict[str, Cell]) -> CkaSpec | None:
    if raw is None:
        return None
    ck = _mapping(raw, "cka")
    _unknown_keys(ck, _CKA_KEYS, "cka")
    teacher = ck.get("teacher")
    students = ck.get("students") or []
    if teacher not in cells:
        raise ConfigError(f"grid field 'cka.teacher': expected a run name of this grid, "
                          f"got {teacher!r}")
    for s in students:
        if s not in cells:
            raise ConfigError(f"grid field 'cka.students': no run named {s!r}")
    return CkaSpec(str(teacher), [str(s) for s in students], str(ck.get("split", "test")),
                   int(ck.get("batch_size", 256)), ck.get("max_batches"),
                   bool(ck.get("pool", False)), ck.get("stages"))


def parse_grid(raw: Mapping[str, Any], source: str = "<dict>") -> GridSpec:
    """Validate a grid spec dict (see :mod:`supkd.experiments.grid`); raises ``ConfigError``."""
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
    _unknown_keys(final, {"config"}, "final")
    _unknown_keys(tune, {"config", "seeds"}, "tune")
    cells: dict[str, Cell] = {}
    for name, entry in runs.items():
        _entry_cells(str(name), _mapping(entry, f"runs.{name}"), seeds, cells)
    _check_alpha_from(cells)
    cka = _parse_cka(raw.get("cka"), cells)
    # The grid's name is its default runs folder (runs/<grid>).
    grid_name = raw.get("grid", Path(source).stem if source != "<dict>" else "grid")
    return GridSpec(
        name=check_path_name(str(grid_name) if grid_name is not None else "",
                             "grid field 'grid'"),
        seeds=seeds, base=_mapping(raw.get("base"), "base"),
        final_config=_mapping(final.get("config"), "final.config"),
        tune_config=_mapping(tune.get("config"), "tune.config"),
        tune_seeds=_seed_list(tune.get("seeds", seeds[:1]), "tune.seeds"),
        cells=cells, published=raw.get("published"), cka=cka, source=source,
        resources=_resource_layer(raw.get("resources"), "resources"),
        teachers=_teachers(raw.get("teachers")),
    )


def read_grid_yaml(path: str | Path) -> dict[str, Any]:
    """A grid spec file as a dict, with ``extends: other.yaml`` (relative to the file)
    resolved by the one YAML reader: the other spec is the starting point, this file's
    sections are merged into it key by key (``runs`` by entry name)."""
    return read_yaml(path, what="grid file")


def load_grid(path: str | Path) -> GridSpec:
    """Read and validate a grid spec file."""
    return parse_grid(read_grid_yaml(path), str(path))
