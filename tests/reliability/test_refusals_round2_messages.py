"""Refusal catalogue, round 2 (issue 25, classes 12 and 13): messages that pointed the wrong
way now name what the user gave, and settings that are legal but do not do what they seem
to are warned about once.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml
from catalogue import TINY, refused, run_cli, warned, write_cfg

from supkd.errors import ConfigError
from supkd.models import create_model
from supkd.train.checkpoint import save_model


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("teacher") / "model.pt"
    save_model(path, create_model("resnet18", num_classes=10, width=4, in_channels=1),
               {"task": "ce"})
    return path


def _train(tmp_path: Path, *overrides: str) -> list[str]:
    return ["train", str(write_cfg(tmp_path / "c.yaml")), *overrides, "--out",
            str(tmp_path / "out"), "--quiet"]


# ============================================================================ 12: messages
@pytest.mark.parametrize("content", [
    os.urandom(2048),
    b"# not a checkpoint\nweights: none\n",
    b"\x89PNG\r\n\x1a\n" + bytes(64),
])
def test_a_file_that_is_not_a_checkpoint_says_so(tmp_path, capsys, content):
    bad = tmp_path / "teacher.pt"
    bad.write_bytes(content if content[:2] != b"\x80\x02" else b"x" + content)
    line = refused(capsys, _train(tmp_path, "task.name=distill", f"task.teacher={bad}"),
                   "task.teacher", "teacher.pt", "is not a checkpoint", watch=[tmp_path],
                   allowed=[tmp_path / "out"])
    assert "safe" not in line and "pickled" not in line
    line = refused(capsys, ["import-teacher", str(bad), "--out", str(tmp_path / "imp")],
                   "is not a checkpoint", watch=[tmp_path], allowed=[tmp_path / "out"])
    assert not (tmp_path / "imp").exists()


@pytest.mark.parametrize("which", ["train", "grid"])
def test_a_folder_given_as_the_config_file_is_not_called_missing(tmp_path, capsys, which):
    folder = tmp_path / "configs"
    folder.mkdir()
    refused(capsys, [which, str(folder), "--out", str(tmp_path / "o")], str(folder),
            "is a folder, expected a YAML file", watch=[tmp_path])


@pytest.mark.parametrize("word", ["train.epochs", "seed"])
def test_an_override_without_equals_says_key_value_was_expected(tmp_path, capsys, word):
    refused(capsys, _train(tmp_path, word), f"override '{word}'", "expected KEY=VALUE",
            "got no '='", watch=[tmp_path])


@pytest.mark.parametrize("argv, needle", [
    (["grid", "g.yaml", "--on-interrupt", "stop"], "invalid choice: 'stop'"),
    (["cka", "--teacher", "t", "--student", "s", "--kernel", "poly"], "invalid choice: 'poly'"),
    (["train", "c.yaml", "--out"], "expected one argument"),
])
def test_an_argument_error_shows_a_one_line_usage(tmp_path, capsys, argv, needle):
    line = refused(capsys, argv, needle, usage=True, watch=[tmp_path])
    got = run_cli(capsys, argv)[1]
    assert len(got) == 2, got  # one usage line, one error line
    assert got[0].startswith(f"usage: supkd {argv[0]} [options]") and "--help" in got[0]
    assert line.startswith(f"supkd {argv[0]}: error:")


@pytest.mark.parametrize("stage", ["layer9", "blocks.3"])
def test_cka_stages_names_the_teacher_not_model_a(tmp_path, capsys, teacher, stage):
    refused(capsys, ["cka", "--teacher", str(teacher), "--student", str(teacher), "--data",
                     "digits", "--batches", "1", "--batch-size", "16", "--stages", stage,
                     "--out", str(tmp_path / "c")],
            "--stages: the teacher", str(teacher), f"'{stage}'", watch=[tmp_path])


class _Stages(torch.nn.Module):
    """A model whose forward_intermediates gives the stages named (a ViT-like teacher)."""

    def __init__(self, names: list[str]) -> None:
        super().__init__()
        self.spec = {"name": "vit-like"}
        self.names = names
        self.w = torch.nn.Parameter(torch.ones(()))

    def forward_intermediates(self, x):
        return {**{n: x * self.w for n in self.names}, "embedding": x.flatten(1),
                "logits": x.flatten(1)}


def test_a_stage_one_model_lacks_names_that_model_and_the_stages_both_have():
    from supkd.train.tasks.distill import _check_stage

    vit = _Stages(["patch_embed", "blocks.0", "blocks.1", "layer4"])
    resnet = create_model("resnet18", num_classes=10, width=4, in_channels=1)
    x = torch.zeros(2, 1, 8, 8)
    with pytest.raises(ConfigError) as err:
        _check_stage(vit, resnet, "blocks.1", x)
    msg = str(err.value)
    assert "got 'blocks.1': the student (resnet18) has no such stage (the teacher, " \
        "vit-like, has)" in msg
    assert "expected a stage both models have (layer4)" in msg
    with pytest.raises(ConfigError, match=r"got 'layer7': neither the teacher \(vit-like\) "
                                          r"nor the student \(resnet18\) has it"):
        _check_stage(vit, resnet, "layer7", x)
    _check_stage(vit, resnet, "layer4", x)  # both have it: nothing to say


@pytest.mark.parametrize("resources, key", [
    ({"nodes": 3}, "resources.nodes"),
    ({"gpus": 8}, "resources.gpus"),
    ({"tasks_per_node": 2}, "resources.tasks_per_node"),
])
def test_the_local_launcher_blames_the_key_the_user_wrote(tmp_path, capsys, resources, key):
    spec = tmp_path / "g.yaml"
    spec.write_text(yaml.safe_dump({
        "grid": "g", "base": {k: v for k, v in TINY.items() if k != "name"},
        "runs": {"big": {"config": {"task": {"name": "ce"}}, "resources": resources}}}))
    line = refused(capsys, ["grid", str(spec), "--out", str(tmp_path / "r")],
                   f"runs.big.{key}", watch=[tmp_path])
    assert "tasks_per_node" not in line or key.endswith("tasks_per_node")


@pytest.mark.slow
def test_hub_weights_offline_fail_fast_in_one_line(tmp_path, capsys, monkeypatch):
    """No retries for a minute: the Hub unreachable (here: huggingface_hub's own offline
    switch, so the test never depends on this machine's network) and nothing cached."""
    pytest.importorskip("timm")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    refused(capsys, _train(tmp_path, "model.name=timm/resnet10t", "~model.width",
                           "model.pretrained=true"),
            "model.pretrained", "cannot be reached", "not in the local cache",
            watch=[tmp_path], allowed=[tmp_path / "out", tmp_path / "hf"])


# ===================================================================== 13: warned, once
@pytest.mark.parametrize("loss", ["sp", "rkd"])
def test_a_relational_loss_at_batch_one_is_warned_about(tmp_path, capsys, teacher, loss):
    warned(capsys, _train(tmp_path, "task.name=distill", f"task.teacher={teacher}",
                          f"task.loss={loss}", "train.batch_size=1"),
           "train.batch_size", f"loss '{loss}'", "value and gradient are 0")


def test_a_loss_that_works_at_batch_one_is_not_warned_about(tmp_path, capsys, teacher):
    code, lines, _ = run_cli(capsys, _train(tmp_path, "task.name=distill",
                                            f"task.teacher={teacher}", "task.loss=dist",
                                            "train.batch_size=1"))
    assert code == 0 and not [ln for ln in lines if "warning" in ln], lines


def test_an_alpha_warmup_longer_than_the_run_is_warned_about(tmp_path, capsys, teacher):
    warned(capsys, _train(tmp_path, "task.name=distill", f"task.teacher={teacher}",
                          "task.loss=cosine", "task.alpha_warmup_epochs=2.5"),
           "task.alpha_warmup_epochs", "2.5 epochs", "longer than the run (1 epochs")


@pytest.mark.parametrize("prepare", ["absent", "empty"])
def test_resume_with_nothing_to_resume_is_warned_about(tmp_path, capsys, prepare):
    if prepare == "empty":
        (tmp_path / "out").mkdir()
    warned(capsys, _train(tmp_path, "--resume"), "--resume", "holds no run to resume",
           "starting a fresh run")


def test_resume_of_an_interrupted_run_is_not_warned_about(tmp_path, capsys):
    code, _, _ = run_cli(capsys, _train(tmp_path))
    assert code == 0
    code, lines, _ = run_cli(capsys, _train(tmp_path, "--resume"))
    assert code == 0 and not [ln for ln in lines if "holds no run" in ln], lines


def test_cpus_above_this_machines_cores_is_warned_about(tmp_path, capsys):
    cores = len(os.sched_getaffinity(0))
    spec = tmp_path / "g.yaml"
    spec.write_text(yaml.safe_dump({
        "grid": "g", "base": {k: v for k, v in TINY.items() if k != "name"},
        "runs": {"wide": {"config": {"task": {"name": "ce"}},
                          "resources": {"cpus": cores + 3}}}}))
    warned(capsys, ["grid", str(spec), "--out", str(tmp_path / "r"), "--no-report"],
           "runs.wide.resources.cpus", f"{cores + 3} threads", f"{cores} cores")
