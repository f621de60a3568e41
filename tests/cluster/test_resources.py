"""The ``resources:`` section of a grid spec, and what each launcher makes of it (no cluster
needed): parsing and bad values, layering, the sbatch request, each run's threads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from supkd.errors import ConfigError
from supkd.experiments.grid import parse_grid, plan_grid, run_grid
from supkd.experiments.grid.executor import Job
from supkd.experiments.grid.jobs import _apply_threads, train_job
from supkd.experiments.grid.launchers.slurm import slurm_parameters
from supkd.experiments.grid.resources import Resources, parse_resources


def _raw(**extra):
    raw = {"grid": "r", "seeds": [0], "base": {"data": {"name": "digits"}},
           "resources": {"cpus": 2, "mem_gb": 4, "slurm": {"partition": "gpu",
                                                           "sbatch": {"exclusive": True}}},
           "runs": {"teacher": {"config": {"task": {"name": "ce"}},
                                "resources": {"gpus": 8, "time_min": 600,
                                              "slurm": {"qos": "high"}}},
                    "kd_{m}": {"matrix": {"m": {"a": {"resources": {"gpus": 0.25}}, "b": {}}},
                               "config": {"task": {"name": "ce"}}}}}
    raw.update(extra)
    return raw


def test_layers_merge_key_by_key_and_stay_out_of_the_spec_hash(tmp_path):
    by = {r.name: r for r in plan_grid(parse_grid(_raw()), tmp_path)}
    t = by["teacher-s0"].resources
    assert (t.cpus, t.gpus, t.mem_gb, t.time_min, t.ranks, t.ranks_per_node) == (
        2, 8.0, 4.0, 600, 8, 8)
    assert t.section("slurm") == {"partition": "gpu", "qos": "high",
                                  "sbatch": {"exclusive": True}}
    assert by["kd_a-s0"].resources.gpus == 0.25 and by["kd_a-s0"].resources.ranks == 1
    assert by["kd_b-s0"].resources == Resources(cpus=2, mem_gb=4.0, sections={"slurm": {
        "partition": "gpu", "sbatch": {"exclusive": True}}})
    # How a run is placed does not change what it computes: same config without them.
    bare = {r.name: r for r in plan_grid(parse_grid({**_raw(), "resources": None}), tmp_path)}
    assert bare["teacher-s0"].config == by["teacher-s0"].config
    assert bare["kd_b-s0"].resources == Resources()


@pytest.mark.parametrize(("resources", "field", "expected"), [
    ({"cpus": 0}, "resources.cpus", "whole number >= 1"),
    ({"cpus": 1.5}, "resources.cpus", "whole number >= 1"),
    ({"gpus": -1}, "resources.gpus", ">= 0"),
    ({"gpus": 2.5}, "resources.gpus", "a share of one GPU"),
    ({"gpus": "one"}, "resources.gpus", "expected a number"),
    ({"nodes": 0}, "resources.nodes", ">= 1"),
    ({"gpus": 4, "tasks_per_node": 2}, "resources.tasks_per_node", "one rank per GPU"),
    ({"gpus": 0.5, "tasks_per_node": 2}, "resources.tasks_per_node", "has one rank"),
    ({"mem_gb": 0}, "resources.mem_gb", "> 0"),
    ({"time_min": 0}, "resources.time_min", ">= 1"),
    ({"cpu": 1}, "resources", "unknown key 'cpu'"),
    ({"slurm": {"partiton": "x"}}, "resources.slurm", "unknown key 'partiton'"),
    ({"slurm": {"qos": ""}}, "resources.slurm.qos", "non-empty string"),
    ({"slurm": {"sbatch": ["--exclusive"]}}, "resources.slurm.sbatch", "mapping of sbatch"),
    ({"ray": {"max_retries": -1}}, "resources.ray.max_retries", ">= 0"),
    ({"ray": {"resources": {"a100": 0}}}, "resources.ray.resources.a100", "> 0"),
    ("4 cpus", "resources", "expected a mapping"),
    # finiteness, and the launchers' own sections (issue 25, class 2)
    ({"gpus": float("inf")}, "resources.gpus", "finite number"),
    ({"mem_gb": float("inf")}, "resources.mem_gb", "finite number"),
    ({"mem_gb": float("nan")}, "resources.mem_gb", "finite number"),
    ({"ray": 5}, "resources.ray", "expected a mapping, got 5"),
    ({"slurm": ["gpu"]}, "resources.slurm", "expected a mapping"),
    ({"ray": {"resources": {"a100": float("inf")}}}, "resources.ray.resources.a100",
     "finite number"),
    # packing (issue 23)
    ({"slurm": {"pack": 0}}, "resources.slurm.pack", "whole number >= 1"),
    ({"slurm": {"pack": 2.5}}, "resources.slurm.pack", "whole number >= 1"),
    ({"slurm": {"concurrent": "two"}}, "resources.slurm.concurrent", "whole number >= 1"),
    ({"slurm": {"pack": 2, "concurrent": 4}}, "resources.slurm.concurrent",
     "cannot exceed its pack"),
    ({"slurm": {"array_parallelism": True}}, "resources.slurm.array_parallelism",
     "whole number >= 1"),
])
def test_bad_resources_name_the_field(resources, field, expected):
    with pytest.raises(ConfigError, match=rf"'{field}'.*{expected}"):
        parse_grid(_raw(resources=resources))


def test_an_entry_or_matrix_value_with_bad_resources_is_named(tmp_path):
    raw = _raw()
    raw["runs"]["teacher"]["resources"] = {"gpus": 1.5}
    with pytest.raises(ConfigError, match=r"'runs.teacher.resources.gpus'"):
        parse_grid(raw)
    raw = _raw()
    raw["runs"]["kd_{m}"]["matrix"]["m"]["b"] = {"resources": {"nodes": "two"}}
    with pytest.raises(ConfigError, match=r"'runs.kd_\{m\}.matrix.m.b.resources.nodes'"):
        parse_grid(raw)
    # Layers that are fine alone but not together: named by the run's entry.
    raw = _raw()
    raw["resources"]["tasks_per_node"] = 8
    raw["runs"]["kd_{m}"]["matrix"]["m"]["a"]["resources"] = {"gpus": 2}
    with pytest.raises(ConfigError, match=r"'runs.kd_\{m\}.resources.tasks_per_node'"):
        plan_grid(parse_grid(raw), tmp_path)


def test_a_packed_workers_request_is_concurrent_times_a_runs(tmp_path):
    from supkd.experiments.grid.launchers.slurm_pack import worker_parameters
    from supkd.experiments.grid.launchers.slurm_resources import packing

    raw = _raw()
    raw["runs"]["kd_{m}"]["resources"] = {"slurm": {"pack": 8, "concurrent": 4}}
    by = {r.name: r for r in plan_grid(parse_grid(raw), tmp_path)}
    run = by["kd_a-s0"]  # gpus 0.25, cpus 2, mem 4
    assert packing(run.resources, {}) == (8, 4, None)
    assert packing(run.resources, {"pack": 2}) == (2, 2, None)  # --pack over the spec
    assert packing(by["teacher-s0"].resources, {"pack": 4}) == (1, 1, None)  # DDP: alone
    job = Job(run.name, train_job, run.config, tmp_path, False, run.resources)
    w = worker_parameters(slurm_parameters(job, {}, "g"), 8, 4, run.resources.gpus)
    # Four runs on one GPU; 4 x their CPUs and memory; time for two rounds of four.
    assert (w["gpus_per_node"], w["cpus_per_task"], w["mem_gb"], w["timeout_min"]) == (
        1, 8, 16.0, 2 * 24 * 60)
    assert "name" not in w and w["slurm_partition"] == "gpu"


def test_the_sbatch_request_of_a_run(tmp_path):
    by = {r.name: r for r in plan_grid(parse_grid(_raw()), tmp_path)}
    run = by["teacher-s0"]
    job = Job(run.name, train_job, run.config, tmp_path, False, run.resources)
    cli = {"account": "lab", "qos": "low", "sbatch": {"mail-type": "END"}}
    p = slurm_parameters(job, cli, "g", after=["12", "13"])
    assert p == {
        "name": "supkd-g-teacher-s0", "timeout_min": 600, "nodes": 1, "tasks_per_node": 8,
        "cpus_per_task": 2, "mem_gb": 4.0, "gpus_per_node": 8,
        "slurm_partition": "gpu", "slurm_account": "lab", "slurm_qos": "low",  # CLI wins
        "slurm_dependency": "afterok:12:13",
        "slurm_additional_parameters": {"exclusive": True, "mail-type": "END",
                                        "kill-on-invalid-dep": "yes"}}
    bare = Job("x/cka", train_job, {}, tmp_path, False, Resources())
    assert slurm_parameters(bare, {}, "g") == {
        "name": "supkd-g-x-cka", "timeout_min": 24 * 60, "nodes": 1, "tasks_per_node": 1,
        "cpus_per_task": 1}
    pytest.importorskip("submitit")
    import submitit

    # submitit itself accepts the request (it checks names and types, and renders it).
    ex = submitit.AutoExecutor(folder=tmp_path, cluster="debug")
    ex.update_parameters(**p)


def thread_probe(config: dict, run_dir: Path, resume: bool) -> dict:
    """A stand-in job: the torch thread count the launcher gave it, into its directory."""
    import torch

    _apply_threads()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "threads.json").write_text(json.dumps(torch.get_num_threads()))
    return {"status": "completed"}


def test_each_run_gets_its_cpus_as_torch_threads_on_the_local_pool(tmp_path):
    raw = {"grid": "th", "seeds": [0], "base": {}, "resources": {"cpus": 2},
           "runs": {"two": {}, "one": {"resources": {"cpus": 1}}, "three": {
               "resources": {"cpus": 3}}}}
    res = run_grid(parse_grid(raw), tmp_path, jobs=2, run_fn=thread_probe, stream=None)
    assert res.count("completed") == 3
    got = {d: json.loads((tmp_path / f"{d}-s0" / "threads.json").read_text())
           for d in ("one", "two", "three")}
    assert got == {"one": 1, "two": 2, "three": 3}


def test_parse_resources_defaults():
    r = parse_resources({}, "resources")
    assert r == Resources() and r.ranks == 1 and r.threads(5) == 5
    assert parse_resources({"cpus": 3}, "resources").threads(5) == 3
