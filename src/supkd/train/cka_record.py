"""The one ``cka.json`` record: layer-wise CKA (paper Fig. 2) of a teacher against one or
more students, written through :meth:`supkd.train.run_dir.RunDir.write_cka` by both
``supkd cka`` (several students, into ``--out``) and the grid (one KD student, into that
student's run directory).

Fields (docs/architecture.md, "CKA"): ``teacher {name, path, method}``, ``data {name,
split, batch_size, num_samples, num_batches, skipped_samples, seed}``, ``pool``,
``kernel``, ``estimator``, ``teacher_stages``, ``sanity`` (teacher vs itself per stage),
``teacher_self_matrix``, ``students [{key, name, path, method, seed, stages, matrix,
diagonal, matched, heatmap}]``, ``per_stage {stages, methods {method: {mean, std, n}}}``,
``figures``, ``meta`` (the grid student's run meta; ``{}`` from ``supkd cka``) and
``wall_time_s``. Undefined values (a std over one run) are ``null``, so the file is strict
JSON.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from supkd.analysis.layerwise import LayerwiseCKA, per_stage_summary

__all__ = ["CkaRecord", "CkaSide", "finite_or_null"]


def finite_or_null(obj: Any) -> Any:
    """NaN/Inf -> None, recursively, so that the record is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_or_null(v) for v in obj]
    return obj


@dataclass(frozen=True)
class CkaSide:
    """One model of the comparison: a display name, where it was loaded from, its method
    (the run's ``meta.method``, else ``task.loss``, else ``task.name``) and seed."""

    name: str
    path: str
    method: str | None = None
    seed: int | None = None


def _matrix(m: Any) -> list[list[float]]:
    return [[float(v) for v in row] for row in m.tolist()]


@dataclass
class CkaRecord:
    """The ``cka.json`` document (module docstring)."""

    teacher: dict[str, Any]
    data: dict[str, Any]
    pool: bool
    kernel: str
    estimator: str
    teacher_stages: list[str]
    sanity: dict[str, float]
    teacher_self_matrix: list[list[float]]
    students: list[dict[str, Any]]
    per_stage: dict[str, Any]
    figures: dict[str, str] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    wall_time_s: float | None = None

    @classmethod
    def build(cls, teacher: CkaSide, students: Mapping[str, tuple[CkaSide, LayerwiseCKA]],
              data: Mapping[str, Any], *, heatmaps: Mapping[str, str] | None = None,
              figures: Mapping[str, str] | None = None, meta: Mapping[str, Any] | None = None,
              wall_time_s: float | None = None) -> CkaRecord:
        """The record of ``students`` (key -> (side, result against ``teacher``)), in order.

        ``data``: the data set's ``name``, ``split``, ``batch_size`` and ``seed``; the sample
        counts are taken from the results. ``heatmaps``: key -> PNG file name, when drawn.
        """
        if not students:
            raise ValueError("CkaRecord.build: expected at least one student")
        first = next(iter(students.values()))[1]
        entries = []
        for key, (side, res) in students.items():
            entries.append({
                "key": key, "name": side.name, "path": side.path,
                "method": side.method or key, "seed": side.seed, "stages": list(res.stages_b),
                "matrix": _matrix(res.matrix), "diagonal": dict(res.diagonal),
                "matched": dict(res.matched), "heatmap": (heatmaps or {}).get(key),
            })
        stages, methods = per_stage_summary(
            [(side.method or key, res) for key, (side, res) in students.items()])
        return cls(
            teacher={"name": teacher.name, "path": teacher.path, "method": teacher.method},
            data={**dict(data), "num_samples": first.num_samples,
                  "num_batches": first.num_batches, "skipped_samples": first.skipped_samples},
            pool=first.pool, kernel=first.kernel, estimator=first.estimator,
            teacher_stages=list(first.stages_a), sanity=first.sanity,
            teacher_self_matrix=_matrix(first.self_matrix), students=entries,
            per_stage={"stages": stages, "methods": methods}, figures=dict(figures or {}),
            meta=dict(meta or {}), wall_time_s=wall_time_s,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (undefined values as ``null``)."""
        return finite_or_null(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CkaRecord:
        """The record of a ``cka.json`` document (also of the flat layout the grid wrote
        before this record existed); ValueError when it is not one."""
        if "students" not in data and "diagonal" in data:
            data = _from_flat_layout(data)
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names[:10] if n not in data]
        if missing:
            raise ValueError(f"not a cka.json record (no '{missing[0]}')")
        return cls(**{k: v for k, v in data.items() if k in names})

    def diagonal(self, key: str | None = None) -> dict[str, float]:
        """Matched-stage CKA of student ``key`` (the first student when None)."""
        entry = self.students[0] if key is None else next(
            s for s in self.students if s["key"] == key)
        return {str(k): float(v) for k, v in entry["diagonal"].items() if v is not None}


def _from_flat_layout(d: Mapping[str, Any]) -> dict[str, Any]:
    """A grid ``cka.json`` of the earlier flat layout (``LayerwiseCKA.to_dict()`` plus
    ``teacher_dir``, ``student_dir``, ``split``, ``meta``) as this record's fields."""
    from pathlib import Path

    teacher, student = str(d.get("teacher_dir") or ""), str(d.get("student_dir") or "")
    meta = d.get("meta") if isinstance(d.get("meta"), dict) else {}
    return {
        "teacher": {"name": Path(teacher).name, "path": teacher, "method": None},
        "data": {"split": d.get("split"), "num_samples": d.get("num_samples"),
                 "num_batches": d.get("num_batches"),
                 "skipped_samples": d.get("skipped_samples")},
        "pool": d.get("pool", False), "kernel": d.get("kernel", "linear"),
        "estimator": d.get("estimator", ""), "teacher_stages": list(d.get("stages_a") or []),
        "sanity": dict(d.get("sanity") or {}),
        "teacher_self_matrix": d.get("self_matrix") or [],
        "students": [{
            "key": "student", "name": Path(student).name, "path": student,
            "method": meta.get("method"), "seed": meta.get("seed"),
            "stages": list(d.get("stages_b") or []), "matrix": d.get("matrix") or [],
            "diagonal": dict(d["diagonal"]), "matched": dict(d.get("matched") or {}),
            "heatmap": None,
        }],
        "per_stage": {}, "meta": meta, "wall_time_s": d.get("wall_time_s"),
    }
