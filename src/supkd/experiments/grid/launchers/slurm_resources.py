"""``resources.slurm``: the Slurm launcher's own section of a run's resources, validated
when the spec is read (registered with the launcher, so that a bad value is one line naming
its field, before anything is submitted; ``--dry-run`` reports it too).

Keys:

- ``partition``, ``account``, ``qos``, ``constraint``, ``exclude``: sbatch's own options
  (non-empty strings); ``setup``: shell lines run before the job (e.g. ``module load``);
  ``sbatch``: any other sbatch flag, ``{flag: value}``, ``true`` for a bare flag.
- ``pack: N`` (``--pack N``): a Slurm job is a worker that runs up to N runs, one after the
  other (``concurrent`` at a time), instead of one job per run; 1 (the default): one job
  per run. A DDP run (several ranks) always gets a job of its own.
- ``concurrent: K``: runs at once inside a packed job (default 1), sharing its CPUs and
  GPUs: the job asks for K x ``cpus`` CPUs, K x ``mem_gb`` memory and K x ``gpus`` GPUs
  rounded up (``gpus: 0.25`` with ``concurrent: 4``: four runs on one GPU).
- ``array_parallelism: P``: packed workers are submitted as Slurm job arrays, at most P of
  an array's workers running at once (``--array=0-M%P``), for sites that cap jobs per user.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from supkd.errors import ConfigError
from supkd.experiments.grid.resources import Resources, section, whole

SLURM_KEYS = ("partition", "account", "qos", "constraint", "exclude", "setup", "sbatch",
              "pack", "concurrent", "array_parallelism")
_STRINGS = ("partition", "account", "qos", "constraint", "exclude")
_COUNTS = ("pack", "concurrent", "array_parallelism")


def _sbatch(flags: Any, where: str) -> dict[str, Any]:
    if not isinstance(flags, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str | int | float | bool)
            for k, v in flags.items()):
        raise ConfigError(f"grid field '{where}': expected a mapping of sbatch flags to "
                          f"values, e.g. {{exclusive: true}}, got {flags!r}")
    return {k.lstrip("-"): v for k, v in flags.items()}


def parse_slurm_section(raw: Any, where: str) -> dict[str, Any]:
    """``resources.slurm`` checked key by key (``ConfigError`` naming ``where.KEY``)."""
    sec = section(raw, SLURM_KEYS, where)
    for key in _STRINGS:
        if key in sec and not (isinstance(sec[key], str) and sec[key]):
            raise ConfigError(f"grid field '{where}.{key}': expected a non-empty string, "
                              f"got {sec[key]!r}")
    if "setup" in sec and not (isinstance(sec["setup"], list)
                               and all(isinstance(s, str) for s in sec["setup"])):
        raise ConfigError(f"grid field '{where}.setup': expected a list of shell lines, "
                          f"got {sec['setup']!r}")
    if "sbatch" in sec:
        sec["sbatch"] = _sbatch(sec["sbatch"], f"{where}.sbatch")
    for key in _COUNTS:
        if key in sec:
            whole(sec[key], f"{where}.{key}", 1)
    if sec.get("concurrent", 1) > sec.get("pack", sec.get("concurrent", 1)):
        raise ConfigError(f"grid field '{where}.concurrent': runs at once inside a packed "
                          f"job cannot exceed its pack ({sec['pack']}), got "
                          f"{sec['concurrent']}")
    return sec


def slurm_options(r: Resources, cli: Mapping[str, Any]) -> dict[str, Any]:
    """The run's ``resources.slurm`` with the command line's options over it."""
    return {**r.section("slurm"), **{k: v for k, v in cli.items() if k != "sbatch"}}


def packing(r: Resources, cli: Mapping[str, Any]) -> tuple[int, int, int | None]:
    """(pack, concurrent, array_parallelism) of a run; pack 1: a job of its own."""
    opts = slurm_options(r, cli)
    pack = int(opts.get("pack", 1))
    if r.ranks > 1:
        return 1, 1, None  # a DDP job's ranks are its tasks: never packed
    return pack, min(int(opts.get("concurrent", 1)), pack), opts.get("array_parallelism")
