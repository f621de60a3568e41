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
separate processes (one ``concurrent.futures.ProcessPoolExecutor`` of spawned workers);
``--launcher slurm|ray`` hands each run to a cluster instead, with what its ``resources``
section asks for (:mod:`.launchers`, :mod:`.resources`).

Modules, in the order a grid goes through them:

- :mod:`.spec`: parse and validate the spec (:func:`parse_grid`, :func:`load_grid`);
  :mod:`.resources`: its ``resources`` sections;
- :mod:`.plan`: expand it into :class:`PlannedRun` s in dependency order (:func:`plan_grid`);
- :mod:`.scheduler`: :class:`GridScheduler` runs a plan on an executor (:func:`run_grid`);
- :mod:`.executor`: the :class:`Executor` protocol a launcher implements, and the
  in-process one; :mod:`.local`: the process pool of ``--jobs N``; :mod:`.launchers`: the
  launchers by name (local, slurm, ray) and their cluster jobs' records;
- :mod:`.jobs`: what one job runs (:func:`train_job`, :func:`cka_job`);
- :mod:`.records`, :mod:`.progress`: run-directory states, failure records, progress lines;
  :mod:`.status`: ``supkd grid --status``.
"""

from supkd.experiments.grid.executor import Executor, InProcessExecutor, Job, Outcome
from supkd.experiments.grid.jobs import RunFn, _call, cka_job, train_job
from supkd.experiments.grid.local import LocalPoolExecutor, _death, local_executor
from supkd.experiments.grid.plan import PlannedRun, plan_grid, run_name, spec_hash
from supkd.experiments.grid.scheduler import GridResult, GridScheduler, run_grid
from supkd.experiments.grid.spec import (
    Cell,
    CkaSpec,
    GridSpec,
    load_grid,
    parse_grid,
    read_grid_yaml,
)

__all__ = [
    "Cell",
    "CkaSpec",
    "Executor",
    "GridResult",
    "GridScheduler",
    "GridSpec",
    "InProcessExecutor",
    "Job",
    "LocalPoolExecutor",
    "Outcome",
    "PlannedRun",
    "RunFn",
    "_call",
    "_death",
    "cka_job",
    "load_grid",
    "local_executor",
    "parse_grid",
    "plan_grid",
    "read_grid_yaml",
    "run_grid",
    "run_name",
    "spec_hash",
    "train_job",
]
