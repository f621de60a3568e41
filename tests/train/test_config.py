"""Config loading: YAML + overrides, closest-key errors, types, ranges, extends, round trip."""

from __future__ import annotations

import pytest

from supkd.config import Config, parse_overrides
from supkd.errors import ConfigError
from supkd.train.checks import load_run_config


def test_defaults_round_trip_and_overrides_typed():
    cfg = load_run_config({}, ["optim.lr=1e-4", "train.epochs=3", "schedule.milestones=[2, 3]"])
    assert isinstance(cfg, Config)
    assert cfg.optim.lr == 1e-4 and isinstance(cfg.optim.lr, float)  # "1e-4": YAML 1.1 str
    assert cfg.train.epochs == 3 and cfg.schedule.milestones == [2.0, 3.0]
    assert cfg.task.name == "ce" and type(cfg.task).__name__ == "CEConfig"
    assert load_run_config(cfg.to_dict()) == cfg


def test_yaml_file_extends_and_meta_verbatim(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "name: base\ntrain: {epochs: 5, batch_size: 64}\nmeta: {a: 1, b: [1, 2]}\n"
    )
    (tmp_path / "run.yaml").write_text(
        "extends: base.yaml\nname: child\ntrain: {epochs: 7}\nmeta: {table: t2}\n"
    )
    cfg = load_run_config(tmp_path / "run.yaml", ["meta.note=x"])
    assert cfg.name == "child"
    assert cfg.train.epochs == 7 and cfg.train.batch_size == 64  # deep-merged
    # One merge rule for run configs and grid specs: mappings merge key by key, meta too.
    assert cfg.meta == {"a": 1, "b": [1, 2], "table": "t2", "note": "x"}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["optim.lrr=0.1"], "unknown config key 'optim.lrr' (did you mean 'optim.lr'?)"),
        (["trian.epochs=1"], "unknown config key 'trian'"),
        (["optim.lr=abc"], "config field 'optim.lr': expected a number, got 'abc'"),
        (["train.epochs=2.5"], "config field 'train.epochs': expected an integer"),
        (["train.epochs=true"], "config field 'train.epochs': expected an integer"),
        (["deterministic=1"], "config field 'deterministic': expected true or false"),
        (["optim.lr=-1"], "config field 'optim.lr': expected a number > 0, got -1"),
        (["optim.name=adam"], "config field 'optim.name': expected one of sgd, adamw"),
        (["train.amp=bf61"], "(did you mean 'bf16'?)"),
        (["task.name=distil"], "(did you mean 'distill'?)"),
        (["model.name=resnet19"], "config field 'model.name'"),
        (["task.label_smoothing=1.5"], "config field 'task.label_smoothing'"),
        (["task.name=supcon", "task.temperature=0"], "config field 'task.temperature'"),
        (["task.name=distill"], "config field 'task.teacher'"),
        (
            ["task.name=distill", "task.teacher=x", "task.loss=supcon"],
            "(did you mean 'supcon_kd'?)",
        ),
        (
            ["task.name=distill", "task.teacher=x", "task.loss_args={tau: 1}"],
            "config field 'task.loss_args': loss 'supcon_kd': unknown argument 'tau'",
        ),
        (["task.name=distill", "task.teacher=x", "task.alpha=-1"], "'task.alpha'"),
        (
            ["task.name=distill", "task.teacher=x", "task.representation=embeding"],
            "(did you mean 'embedding'?)",
        ),
        (["task.name=distill", "task.teacher=x", "task.representation="], "logits"),
        (["task.name=distill", "task.teacher=x", "task.alpha_warmup_epochs=-1"],
         "'task.alpha_warmup_epochs'"),
        (["task.name=linear"], "config field 'task.encoder'"),
        (["schedule.milestones=[3, 2]"], "expected increasing epochs"),
        (["optim.lr.x=1"], "config field 'optim.lr': expected a number"),
        (["device=tpu"], "config field 'device'"),
        (["data.name=cifar"], "config field 'data.name'"),
        (["train=3"], "config field 'train': expected a mapping"),
    ],
)
def test_bad_values_name_the_field(overrides, expected):
    with pytest.raises(ConfigError) as err:
        load_run_config({}, overrides)
    msg = str(err.value)
    assert expected in msg
    assert "\n" not in msg


def test_task_fields_belong_to_the_task():
    # 'teacher' is a distill field: unknown for the ce task, with the valid keys listed.
    with pytest.raises(ConfigError, match=r"unknown config key 'task\.teacher'"):
        load_run_config({}, ["task.teacher=x"])


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_run_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochs: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_run_config(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_run_config(lst)
    cyc = tmp_path / "cyc.yaml"
    cyc.write_text("extends: cyc.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_run_config(cyc)


def test_parse_overrides():
    assert parse_overrides(["a.b=1", "c=[1, 2]", "d=null", "e='007'", "f=x=y"]) == [
        (["a", "b"], 1),
        (["c"], [1, 2]),
        (["d"], None),
        (["e"], "007"),
        (["f"], "x=y"),
    ]
    for bad in ("novalue", "=3", "a..b=1"):
        with pytest.raises(ConfigError):
            parse_overrides([bad])
