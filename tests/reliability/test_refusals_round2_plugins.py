"""Refusal catalogue, round 2 (issue 25, class 4 and the plugin warnings of class 13): a
plugin loss whose ``compute`` returns the wrong thing is one line naming the loss, its file,
what came back and what was expected (exit 2); one that raises (or calls ``sys.exit``) is a
bug in the user's code: one header line, then its own frames only (exit 1).

The plugin losses are real ``@register_loss`` classes in a real ``.py`` file given with
``--plugin``, trained by ``supkd train`` in process on a saved (untrained) teacher.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from catalogue import changes, refused, run_cli, snapshot, warned, write_cfg

from supkd.losses import LOSSES
from supkd.models import create_model
from supkd.train.checkpoint import save_model

PLUGIN = textwrap.dedent('''
    import sys
    import torch
    from supkd.losses import register_loss
    from supkd.losses.base import KDLoss


    class _Any(KDLoss):
        same_width = False


    @register_loss("r2_float")
    class ReturnsFloat(_Any):
        def compute(self, s, t, labels):
            return float((s - t).pow(2).mean())


    @register_loss("r2_matrix")
    class ReturnsMatrix(_Any):
        def compute(self, s, t, labels):
            return s * 2.0


    @register_loss("r2_long")
    class ReturnsLong(_Any):
        def compute(self, s, t, labels):
            return (s > 0).sum()


    @register_loss("r2_nan")
    class ReturnsNan(_Any):
        def compute(self, s, t, labels):
            return s.mean() * float("nan")


    @register_loss("r2_item")
    class ReturnsItem(_Any):
        def compute(self, s, t, labels):
            return torch.tensor(s.detach().pow(2).mean().item())


    def _lookup(table, key):
        return table[key]


    @register_loss("r2_raises")
    class Raises(_Any):
        def compute(self, s, t, labels):
            return _lookup({"a": s.mean()}, "temperature")


    @register_loss("r2_exits")
    class Exits(_Any):
        def compute(self, s, t, labels):
            sys.exit("giving up")


    @register_loss("r2_own_param")
    class OwnParameterOnly(_Any):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(()))

        def compute(self, s, t, labels):
            return self.scale * (s.detach() - t).pow(2).mean()
''')


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(plugin file, teacher model.pt): one plugin module for the whole file (a loss name
    is registered once per process), unregistered at the end."""
    root = tmp_path_factory.mktemp("plugins")
    plugin = root / "round2_losses.py"
    plugin.write_text(PLUGIN)
    teacher = root / "teacher" / "model.pt"
    save_model(teacher, create_model("resnet18", num_classes=10, width=4, in_channels=1),
               {"task": "ce"})
    yield plugin, teacher
    for name in [n for n in LOSSES if n.startswith("r2_")]:
        LOSSES.remove(name)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # The CLI exports its --plugin modules to SUPKD_PLUGINS (for the processes it starts);
    # in process that would carry one test's plugin into the next.
    monkeypatch.delenv("SUPKD_PLUGINS", raising=False)


def _argv(setup, tmp_path: Path, loss: str) -> list[str]:
    plugin, teacher = setup
    cfg = write_cfg(tmp_path / "c.yaml")
    return ["--plugin", str(plugin), "train", str(cfg), "task.name=distill",
            f"task.teacher={teacher}", f"task.loss={loss}", "--out", str(tmp_path / "S"),
            "--quiet"]


WRONG = {
    "r2_float": ("float", "expected a scalar float tensor"),
    "r2_matrix": ("shape (16, 10)", "expected a scalar float tensor"),
    "r2_long": ("torch.int64 tensor", "expected a scalar float tensor"),
    "r2_nan": ("nan on finite inputs", "expected a finite number"),
    "r2_item": ("takes no gradient", "computed from the student tensor"),
}


@pytest.mark.parametrize("loss", list(WRONG))
def test_a_plugin_loss_returning_the_wrong_thing_is_one_line(setup, tmp_path, capsys, loss):
    got, expected = WRONG[loss]
    out = tmp_path / "S"
    # The run's folder records the failure (config.yaml, result.json "failed"); nothing else.
    line = refused(capsys, _argv(setup, tmp_path, loss), f"loss '{loss}'",
                   str(setup[0]), got, expected, watch=[tmp_path], allowed=[out])
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "failed" and loss in result["error"]
    assert not (out / "checkpoints").exists()
    assert "Traceback" not in line


@pytest.mark.parametrize("loss, header, last", [
    ("r2_raises", "raised KeyError: 'temperature'", "KeyError: 'temperature'"),
    ("r2_exits", "called sys.exit('giving up') inside compute", "SystemExit: giving up"),
])
def test_a_plugin_loss_that_raises_shows_only_its_own_frames(setup, tmp_path, capsys, loss,
                                                             header, last):
    plugin = str(setup[0])
    code, lines, _ = run_cli_any(capsys, _argv(setup, tmp_path, loss))
    assert code == 1, lines
    assert lines[0] == f"supkd train: error: loss '{loss}' ({plugin}): {header}", lines
    assert lines[1] == "Traceback of the plugin's own code (most recent call last):"
    files = [ln.split('"')[1] for ln in lines if ln.lstrip().startswith('File "')]
    assert files and set(files) == {plugin}, lines  # no supkd, torch or stdlib frames
    if loss == "r2_raises":  # the helper's frame is the user's too
        assert any("_lookup" in ln for ln in lines)
    assert lines[-1] == last


def run_cli_any(capsys, argv):
    """run_cli without its no-traceback assertion (the plugin's own frames are wanted)."""
    from supkd.cli import main

    try:
        code = main(argv)
    except SystemExit as exc:  # pragma: no cover - the CLI must not let it through
        raise AssertionError(f"SystemExit({exc.code}) escaped the CLI") from None
    err = capsys.readouterr().err
    return code, [ln for ln in err.splitlines() if ln.strip()], err


def test_a_plugin_loss_without_a_gradient_path_to_the_student_is_warned_once(setup, tmp_path,
                                                                             capsys):
    warned(capsys, _argv(setup, tmp_path, "r2_own_param"), "loss 'r2_own_param'",
           str(setup[0]), "no gradient path to the student")


def test_a_plugin_loss_that_is_right_is_not_checked_into_an_error(setup, tmp_path, capsys):
    """The checks cost a built-in loss nothing and change no number: cosine trains as ever."""
    plugin, teacher = setup
    cfg = write_cfg(tmp_path / "c.yaml")
    code, lines, _ = run_cli(capsys, ["--plugin", str(plugin), "train", str(cfg),
                                      "task.name=distill", f"task.teacher={teacher}",
                                      "task.loss=cosine", "--out", str(tmp_path / "S"),
                                      "--quiet"])
    assert code == 0 and lines == []


# (wandb, once imported, hooks sys.exit and passes None on as 0: either is right)
@pytest.mark.parametrize("code_line, shown", [("sys.exit()", "sys.exit("),
                                              ("sys.exit(4)", "sys.exit(4)")])
def test_a_plugin_calling_sys_exit_at_import_is_warned_and_supkd_goes_on(tmp_path, capsys,
                                                                          code_line, shown):
    plugin = tmp_path / f"exits_{abs(hash(code_line))}.py"
    plugin.write_text(f"import sys\n{code_line}\n")
    before = snapshot(tmp_path)
    line = warned(capsys, ["--plugin", str(plugin), "losses"], str(plugin.name), shown,
                  f"at {plugin}:2 while being imported", "goes on")
    assert "supkd losses: warning:" in line
    assert not changes(before, snapshot(tmp_path))
