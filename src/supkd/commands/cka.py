"""``supkd cka``: layer-wise CKA between a teacher and one or more students (paper Fig. 2).

    supkd cka --teacher runs/teacher --student runs/student_kd
    supkd cka --teacher runs/teacher --students runs/kd_cosine_s* runs/kd_supcon_s* --out figs

Models are loaded with :func:`supkd.models.files.load_model_record` (a run directory, a
``model.pt`` or a ``last.pt``). The images are the test split of the data set in the
teacher's run config (else the first student's), shuffled once with ``--seed`` so that any
``--batches`` prefix covers every class; ``--data`` / ``--data-root`` choose another data set.

Writes to ``--out`` (default: ``<teacher run dir>/cka``, or ``./cka`` for a bare model file):
``cka.json`` (schema in docs/architecture.md), ``heatmap_<student>.png`` per student
(teacher stage × student stage) and ``cka_per_stage.png`` (Fig. 2: CKA of matched stages,
one series per method, mean ± sample std over the runs that share a method).

Teacher and students may be of different architectures (``supkd cka --teacher runs/vit
--student runs/resnet18_kd``): the heatmap compares every stage pair, and Fig. 2 pairs the
stages by relative depth when their names differ (``blocks.4 ~ layer1``; each student's
pairs are in ``cka.json`` under ``matched``).
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HELP = "layer-wise CKA of teacher vs student(s): cka.json, heatmaps and the Fig. 2 plot"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", required=True, metavar="RUN_OR_CKPT",
                        help="teacher run directory, model.pt or checkpoints/last.pt")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--student", metavar="RUN_OR_CKPT", help="one student to compare")
    who.add_argument("--students", nargs="+", metavar="RUN",
                     help="several students (e.g. KD methods x seeds); runs sharing a method "
                          "(meta.method, else task.loss) are averaged in the Fig. 2 plot")
    parser.add_argument("--data", metavar="NAME", default=None,
                        help="data set name (default: the one in the teacher's run config)")
    parser.add_argument("--data-root", metavar="DIR", default=None,
                        help="data folder for --data (needed for cifar10-jpeg, imagefolder)")
    parser.add_argument("--split", choices=("test", "val", "train"), default="test",
                        help="which split's images to use (default test)")
    parser.add_argument("--batches", type=int, default=None, metavar="N",
                        help="use at most N batches (default: the whole split)")
    parser.add_argument("--batch-size", type=int, default=256, metavar="M",
                        help="images per batch, >= 4 (default 256)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="output folder (default <teacher run dir>/cka, or ./cka)")
    parser.add_argument("--pool", action="store_true",
                        help="global-average-pool conv stages (compare channels) instead of "
                             "flattening C*H*W")
    parser.add_argument("--kernel", choices=("linear", "rbf"), default="linear",
                        help="CKA kernel (default linear; rbf uses the median heuristic)")
    parser.add_argument("--stages", default=None, metavar="S1,S2,...",
                        help="comma-separated stage names (default: every stage)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the image order (default 0)")


@dataclass
class _Run:
    """A model to compare, with what its run directory says about it."""

    path: str
    name: str
    model: Any
    method: str | None
    seed: int | None
    config: dict[str, Any] | None
    run_dir: Path | None


def _read_config(run_dir: Path | None) -> dict[str, Any] | None:
    from supkd.errors import ConfigError

    if run_dir is None or not (run_dir / "config.yaml").is_file():
        return None
    import yaml

    path = run_dir / "config.yaml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        raise ConfigError(f"config file {path}: cannot be read as YAML") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top level")
    return raw


def _load_run(path: str) -> _Run:
    from supkd.models.files import load_model_record

    rec = load_model_record(path)
    cfg = _read_config(rec.run_dir)
    method = seed = None
    name = Path(path).name if Path(path).is_dir() else Path(path).stem
    if cfg is not None:
        meta = cfg.get("meta") if isinstance(cfg.get("meta"), dict) else {}
        task = cfg.get("task") if isinstance(cfg.get("task"), dict) else {}
        method = meta.get("method") or task.get("loss") or task.get("name")
        seed = cfg.get("seed") if isinstance(cfg.get("seed"), int) else None
        if rec.run_dir is not None:
            name = rec.run_dir.name
    if method is None:
        method = rec.info.get("task") if isinstance(rec.info, dict) else None
    return _Run(path, name, rec.model, None if method is None else str(method), seed, cfg,
                rec.run_dir)


def _data_config(args: argparse.Namespace, runs: list[_Run]) -> Any:
    from supkd.data import DataConfig
    from supkd.errors import ConfigError

    source = next((r for r in runs if r.config is not None and "data" in r.config), None)
    raw: dict[str, Any] = {}
    if source is not None:
        data = source.config.get("data") if source.config else None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {source.run_dir}/config.yaml: 'data' is not a "
                              "mapping")
        raw = dict(data)
    if args.data is not None:
        if raw.get("name") != args.data:
            raw = {k: v for k, v in raw.items() if k not in ("root", "image_size")}
        raw["name"] = args.data
    if args.data_root is not None:
        raw["root"] = args.data_root
    if not raw.get("name"):
        raise ConfigError("cka --data: no run config names a data set; pass --data NAME "
                          "(and --data-root DIR when it needs one)")
    try:
        return DataConfig(**raw)
    except TypeError as exc:
        where = f"{source.run_dir}/config.yaml" if source is not None else "--data"
        raise ConfigError(f"config file {where}: bad 'data' section ({exc})") from None


def _device(name: str) -> Any:
    from supkd.utils.device import resolve_device

    return resolve_device(name, field="cka --device")


def _safe_name(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "student"
    out, k = base, 2
    while out in taken:
        out, k = f"{base}_{k}", k + 1
    taken.add(out)
    return out


def _check_arguments(args: argparse.Namespace) -> list[str] | None:
    """The --batch-size / --batches checks; the --stages list (None: every stage)."""
    from supkd.errors import ConfigError

    if args.batch_size < 4:
        raise ConfigError(f"cka --batch-size: expected an int >= 4 (the unbiased CKA "
                          f"estimator needs 4 images per batch), got {args.batch_size}")
    if args.batches is not None and args.batches < 1:
        raise ConfigError(f"cka --batches: expected an int >= 1, got {args.batches}")
    if not args.stages:
        return None
    return [s.strip() for s in args.stages.split(",") if s.strip()]


def _images(args: argparse.Namespace, runs: list[_Run], device: Any) -> tuple[Any, Any]:
    """(bundle, loader) of the split to compare on; every model must take its channels."""
    from supkd.data import build_data, make_loader
    from supkd.errors import ConfigError

    bundle = build_data(_data_config(args, runs), seed=0)
    for r in runs:
        in_ch = int(getattr(r.model, "spec", {}).get("in_channels", 3))
        if in_ch != bundle.in_channels:
            raise ConfigError(f"model {r.path}: takes {in_ch}-channel images, data set "
                              f"'{bundle.name}' has {bundle.in_channels} (pass --data)")
    # train=True only for the seeded shuffle (packs such as cifar10-jpeg are stored class by
    # class, so an unshuffled prefix would hold one class); no augmentation, nothing dropped.
    loader = make_loader(bundle, args.split, args.batch_size, train=True, augment="none",
                         device=device, seed=args.seed, drop_last=False)
    return bundle, loader


def _compare(args: argparse.Namespace, teacher: _Run, students: dict[str, _Run],
             loader: Any, stages: list[str] | None, device: Any) -> dict[str, Any]:
    """layerwise_cka_many; its warnings go to stderr as ``supkd cka: warning:`` lines."""
    import warnings

    from supkd.analysis.layerwise import layerwise_cka_many
    from supkd.errors import ConfigError

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            results = layerwise_cka_many(
                teacher.model, {k: s.model for k, s in students.items()}, loader,
                stages=stages, pool=args.pool, max_batches=args.batches, device=device,
                kernel=args.kernel,
            )
        except ValueError as exc:
            raise ConfigError(f"cka: {exc}") from None
    for w in caught:
        print(f"supkd cka: warning: {w.message}", file=sys.stderr)
    return results


def _out_dir(args: argparse.Namespace, teacher: _Run) -> Path:
    """The output folder, created and checked writable before any work (UserError)."""
    from supkd.utils.paths import prepare_output_dir

    if args.out is not None:
        return prepare_output_dir(args.out, "cka --out")
    out = teacher.run_dir / "cka" if teacher.run_dir is not None else Path("cka")
    return prepare_output_dir(out, "cka: default output folder",
                              hint="pass --out DIR (e.g. on storage you can write)")


def _warn_other_data(teacher: _Run, runs: list[_Run]) -> None:
    """SupkdWarning per student trained on another data set than the teacher (name or
    root differ): CKA then compares representations of data one of them never saw."""
    import warnings

    from supkd.errors import SupkdWarning

    def data_of(r: _Run) -> str | None:
        data = (r.config or {}).get("data")
        if not isinstance(data, dict):
            return None
        return f"{data.get('name')}" + (f" ({data['root']})" if data.get("root") else "")

    ref = data_of(teacher)
    for r in runs:
        mine = data_of(r)
        if ref is not None and mine is not None and mine != ref:
            warnings.warn(f"student {r.path} was trained on data set {mine}, the teacher "
                          f"{teacher.path} on {ref}: CKA compares them on data one of them "
                          "never saw", SupkdWarning, stacklevel=2)


def _heatmaps(teacher: _Run, students: dict[str, _Run], results: dict[str, Any],
              out: Path) -> dict[str, str]:
    """One heatmap per student written to ``out``: key -> its file name."""
    from supkd.analysis.plots import plot_cka_heatmap

    pngs = {}
    for key, s in students.items():
        res = results[key]
        pngs[key] = f"heatmap_{key}.png"
        plot_cka_heatmap(res.matrix.tolist(), res.stages_a, res.stages_b, out / pngs[key],
                         label_a=f"teacher ({teacher.name})", label_b=f"student ({s.name})",
                         title=f"Layer-wise CKA: {teacher.name} vs {s.name}")
    return pngs


def _record(args: argparse.Namespace, teacher: _Run, students: dict[str, _Run],
            results: dict[str, Any], bundle: Any, pngs: dict[str, str]) -> Any:
    """The cka.json record (:class:`supkd.train.cka_record.CkaRecord`, the grid's too)."""
    from supkd.train.cka_record import CkaRecord, CkaSide

    def side(r: _Run) -> CkaSide:
        return CkaSide(r.name, str(r.path), r.method, r.seed)

    figures = {f"heatmap:{k}": png for k, png in pngs.items()}
    figures["per_stage"] = "cka_per_stage.png"
    return CkaRecord.build(
        CkaSide(teacher.name, str(teacher.path), teacher.method),
        {k: (side(s), results[k]) for k, s in students.items()},
        {"name": bundle.name, "split": args.split, "batch_size": args.batch_size,
         "seed": args.seed},
        heatmaps=pngs, figures=figures,
    )


def _print_table(args: argparse.Namespace, teacher: _Run, record: Any, out: Path) -> None:
    """A short table on stdout: matched stages per student."""
    entries, stages = record.students, record.per_stage["stages"]
    data = record.data
    width = max(len(e["name"]) for e in entries)
    print(f"CKA teacher {teacher.name} vs students on {data['num_samples']} {data['name']} "
          f"{args.split} images ({'pooled' if args.pool else 'flattened'} stages, "
          f"{args.kernel} kernel)")
    print(" " * (width + 2) + "".join(f"{s:>10}" for s in stages))
    for e in entries:
        print(f"{e['name']:<{width}}  " + "".join(f"{e['diagonal'][s]:>10.3f}" for s in stages))
    print(f"sanity (teacher vs itself): min {min(record.sanity.values()):.6f}")
    print(f"wrote {out / 'cka.json'}")


def run(args: argparse.Namespace) -> int:
    from supkd.analysis.layerwise import stage_labels
    from supkd.analysis.plots import plot_cka_per_stage
    from supkd.train.run_dir import RunDir

    stages = _check_arguments(args)
    device = _device(args.device)
    teacher = _load_run(args.teacher)
    paths = [args.student] if args.student else list(args.students)
    runs = [_load_run(p) for p in paths]
    out = _out_dir(args, teacher)
    _warn_other_data(teacher, runs)
    taken: set[str] = set()
    students = {_safe_name(r.name, taken): r for r in runs}
    bundle, loader = _images(args, [teacher, *runs], device)
    results = _compare(args, teacher, students, loader, stages, device)
    record = _record(args, teacher, students, results, bundle,
                     _heatmaps(teacher, students, results, out))
    fig_stages, series = record.per_stage["stages"], record.per_stage["methods"]
    labels = stage_labels(fig_stages, list(results.values()))
    by_depth = labels != fig_stages
    plot_cka_per_stage(
        labels, series, out / "cka_per_stage.png",
        title=f"CKA with the teacher ({teacher.name}) per stage"
        + (", global average pooled" if args.pool else ""),
        xlabel="teacher stage ~ student stage (same relative depth)" if by_depth else "stage",
    )
    RunDir(out).write_cka(record)
    _print_table(args, teacher, record, out)
    return 0
