"""The demo grid through each launcher on this machine: local (``--jobs 2``), Ray, Slurm
packed (``slurm-packed``: one worker job running the runs two at a time) and Slurm with one
job per run (``slurm``).

Every launcher runs the same grid (``supkd demo``'s 50 runs: teachers, linear stages,
students, α tuning, test-set runs, CKA) into a fresh folder, two runs at a time (local: a
pool of two processes; Ray and Slurm: ``--jobs 2``, so that no run waits in the cluster's
queue for a free core and the comparison is of launching, not of queueing), each run with
one CPU and one torch thread (``resources: {cpus: 1, mem_gb: 2}``; local's own rule gives
the same thread on two cores, so the demo's numbers are unchanged).

Columns:

- wall: the grid from the first submission to its last result (the launcher's start-up
  excluded: Ray's local cluster start is the ``start`` column; the Slurm cluster is already
  up); ratio: wall / local's wall, measured in the same invocation.
- launch overhead per run: for each run, the time from its submission to the driver seeing
  its result, less the run's own ``wall_time_s`` (the engine's measure, from data loading to
  its result; for CKA the analysis): the process start, imports, the launcher's scheduling
  and the driver's polling. Median and mean over the runs.
- same results: every run's status, accuracies, α and CKA equal to local's.

``slurm-packed`` is ``--launcher slurm`` with ``resources.slurm: {pack: 50, concurrent: 2}``:
one Slurm job of two CPUs that runs the grid's runs two at a time in a pool of two
processes, fed by the driver in dependency order (docs/guide/packing.md).

Targets: issue 23, Slurm packed within 1.25x local wall time with a median launch overhead
of at most 2 s per run, Ray within 1.05x; issue 13, Ray under 2 s per run. On a GPU
machine the packing rows (CIFAR-10 fast students 1, 2 and 4 per GPU) are a separate
measurement, not made by this script.

    python benchmarks/launchers.py                      # local, ray, slurm-packed
    python benchmarks/launchers.py --launchers local,slurm   # one Slurm job per run
    python benchmarks/launchers.py --launchers local,ray --seeds 1
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import markdown_table, write_output
from supkd.experiments.demo import demo_spec
from supkd.experiments.grid import GridScheduler
from supkd.experiments.grid.executor import Executor, Job, Outcome
from supkd.experiments.grid.launchers import LauncherOptions, build_launcher
from supkd.experiments.store import scan_runs

RESOURCES = {"resources": {"cpus": 1, "mem_gb": 2, "time_min": 60}}
#: bench name -> (launcher, command-line overrides of resources.<launcher>)
VARIANTS: dict[str, tuple[str, dict[str, dict[str, Any]]]] = {
    "local": ("local", {}), "ray": ("ray", {}), "slurm": ("slurm", {}),
    "slurm-packed": ("slurm", {"slurm": {"pack": 50, "concurrent": 2}}),
}


class Timed:
    """An executor passed through, noting when each job was submitted and seen to end."""

    def __init__(self, inner: Executor) -> None:
        self.inner, self.slots, self.after_ok = inner, inner.slots, inner.after_ok
        self.submitted: dict[str, float] = {}
        self.ended: dict[str, tuple[float, dict[str, Any]]] = {}

    def attach(self, name: str, run_dir: Path, *, analysis: bool = False) -> str | None:
        return self.inner.attach(name, run_dir, analysis=analysis)

    def submit(self, job: Job) -> None:
        self.submitted[job.name] = time.perf_counter()
        self.inner.submit(job)

    def wait(self) -> list[Outcome]:
        out = self.inner.wait()
        now = time.perf_counter()
        for o in out:
            if o.result is not None:
                self.ended[o.name] = (now, o.result)
        return out

    def interrupt(self) -> None:
        self.inner.interrupt()

    def shutdown(self) -> None:
        self.inner.shutdown()


def _results(runs_dir: Path) -> dict[str, tuple]:
    """What must agree between launchers: each run's status, accuracies, α; each CKA."""
    out = {}
    for rec in scan_runs(runs_dir):
        cka, _ = rec.run_dir.read_cka()
        out[rec.path.name] = (rec.status, rec.test_acc, rec.val_acc, rec.meta.get("alpha"),
                              None if cka is None else cka.get("matrix"))
    return out


def run_one(variant: str, seeds: int, root: Path, ray_address: str | None) -> dict[str, Any]:
    launcher, overrides = VARIANTS[variant]
    spec = demo_spec(seeds, RESOURCES)
    out = root / variant
    scheduler = GridScheduler(spec, out, stream=None, rerun_changed=True)
    t0 = time.perf_counter()
    options = LauncherOptions(runs_dir=scheduler.runs_dir, grid=f"bench{os.getpid()}",
                              jobs=2, stream=None, ray_address=ray_address,
                              overrides=overrides)
    timed = Timed(build_launcher(launcher, options, scheduler.plan))
    start = time.perf_counter() - t0
    t1 = time.perf_counter()
    res = scheduler.run(timed)
    wall = time.perf_counter() - t1
    over = [end - timed.submitted[name] - float(r.get("wall_time_s") or 0.0)
            for name, (end, r) in timed.ended.items() if name in timed.submitted]
    return {"launcher": variant, "runs": len(scheduler.plan), "wall": wall, "start": start,
            "over_median": statistics.median(over), "over_mean": statistics.fmean(over),
            "ok": res.ok,
            "results": _results(out)}


def _load() -> str:
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "?"
    return f"{one:.1f}/{five:.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--launchers", default="local,ray,slurm-packed",
                    help=f"comma-separated, of {', '.join(VARIANTS)}")
    ap.add_argument("--seeds", type=int, default=2, help="demo seeds (default 2: 50 runs)")
    ap.add_argument("--ray-address", default=None, help="a running Ray cluster (default: "
                                                        "start one here)")
    ap.add_argument("--out", default=None, help="also write the table to this file")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.launchers.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"--launchers: unknown {unknown[0]!r} (expected {', '.join(VARIANTS)})")
    if "local" not in names:
        names.insert(0, "local")  # the reference of the ratio
    root = Path(tempfile.mkdtemp(prefix="supkd-launchers-"))
    rows, loads = [], []
    try:
        measured = []
        for name in names:
            loads.append(f"{name} {_load()}")
            print(f"{name}: running the demo grid ...", file=sys.stderr, flush=True)
            measured.append(run_one(name, args.seeds, root, args.ray_address))
        ref = measured[0]
        for m in measured:
            same = "yes" if m["results"] == ref["results"] else "NO"
            rows.append([m["launcher"], m["runs"], f"{m['wall']:.1f}",
                         f"{m['wall'] / ref['wall']:.2f}x", f"{m['start']:.1f}",
                         f"{m['over_median']:.2f}", f"{m['over_mean']:.2f}",
                         same if m["ok"] else f"{same} (runs failed)"])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    table = markdown_table(
        ["launcher", "runs", "wall (s)", "vs local", "start (s)", "overhead/run median (s)",
         "overhead/run mean (s)", "same results"], rows)
    versions = _versions()
    text = (f"{table}\n\n- machine: {os.cpu_count()} CPU cores; load (1/5 min) before each "
            f"launcher: {', '.join(loads)}\n- versions: {versions}\n- date: "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n- command: `python "
            f"{' '.join(sys.argv)}`")
    write_output(text, args.out)
    return 0


def _versions() -> str:
    import platform

    import torch

    import supkd

    parts = [f"python {platform.python_version()}", f"torch {torch.__version__}",
             f"supkd {supkd.__version__}"]
    for mod in ("submitit", "ray"):
        try:
            parts.append(f"{mod} {__import__(mod).__version__}")
        except ImportError:
            parts.append(f"{mod} -")
    import subprocess

    try:
        sl = subprocess.run(["sinfo", "--version"], capture_output=True, text=True,
                            timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        sl = "slurm -"
    return ", ".join([*parts, sl])


if __name__ == "__main__":
    raise SystemExit(main())
