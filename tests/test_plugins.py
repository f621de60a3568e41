"""A user's own loss from outside the package: import, build_loss, duplicates, --plugin,
SUPKD_PLUGINS, the supkd.plugins entry points, and a real `supkd --plugin ... train`."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from tests.helpers import TINY

import supkd
from supkd.cli import main
from supkd.errors import UserError
from supkd.losses import LOSSES, KDLoss, build_loss, register_loss
from supkd.utils import plugins
from supkd.utils.plugins import ENV_VAR, import_plugin, load_plugins

SRC = Path(supkd.__file__).resolve().parents[1]

PLUGIN = '''
from pathlib import Path

from supkd.losses import KDLoss, register_loss


@register_loss("{name}")
class MyLoss(KDLoss):
    """mean_i sum_d |z_t - z_s| times a scale."""

    paper_eq = "mean |z_t - z_s|_1"
    summary = "L1 distance (a test plugin)"

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def compute(self, student, teacher, labels):
        Path(__file__).with_name("{name}.called").touch()
        return self.scale * (teacher - student).abs().sum(dim=1).mean()
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """Write a plugin module into tmp_path (importable from there); forget what it
    registered and imported afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    # setenv (not delenv) so that what main(["--plugin", ...]) exports is undone afterwards.
    monkeypatch.setenv(ENV_VAR, "")
    written: list[tuple[str, str]] = []

    def write(module: str, loss: str = "my_loss", text: str | None = None) -> Path:
        path = tmp_path / f"{module}.py"
        path.write_text(PLUGIN.format(name=loss) if text is None else text)
        importlib.invalidate_caches()  # the folder's listing may be cached from before
        written.append((module, loss))
        return path

    yield write
    for module, loss in written:
        LOSSES.remove(loss)
        sys.modules.pop(module, None)


def test_build_loss_works_after_importing_the_users_module(plugin, tmp_path):
    plugin("user_losses_a")
    assert "my_loss" not in LOSSES
    import_plugin("user_losses_a")
    assert list(LOSSES)[-1] == "my_loss"
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    loss = build_loss("my_loss", scale=2.0)
    assert isinstance(loss, KDLoss)
    expected = 2.0 * sum(abs(a - b) for rs, rt in zip(s.tolist(), t.tolist())
                         for a, b in zip(rs, rt)) / 5
    assert loss(s, t).item() == pytest.approx(expected, rel=1e-6)
    assert (tmp_path / "my_loss.called").exists()
    # The base class's contract holds for it too: teacher detached, float32 under autocast.
    t.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(s.requires_grad_(True), t)
    value.backward()
    assert value.dtype == torch.float32 and t.grad is None
    with pytest.raises(ValueError, match="unknown argument 'scal'"):
        build_loss("my_loss", scal=2.0)


def test_a_duplicate_name_is_refused_naming_the_existing_class(plugin):
    plugin("user_losses_b")
    import_plugin("user_losses_b")
    with pytest.raises(ValueError, match=r"'my_loss' is already registered \(by "
                                         r"user_losses_b\.MyLoss\)"):
        register_loss("my_loss")(type("Other", (KDLoss,), {"compute": lambda *a: 0}))
    with pytest.raises(ValueError, match=r"'cosine' is already registered \(by "
                                         r"supkd\.losses\.cosine\.CosineLoss\)"):
        register_loss("cosine")(type("Mine", (KDLoss,), {"compute": lambda *a: 0}))
    assert LOSSES["cosine"].__module__ == "supkd.losses.cosine"
    with pytest.raises(TypeError, match=r"subclass of supkd\.losses\.KDLoss"):
        register_loss("not_a_loss")(torch.nn.MSELoss)
    assert "not_a_loss" not in LOSSES


def test_a_py_file_path_imports_once(plugin, tmp_path):
    path = plugin("user_losses_c")
    first = import_plugin(str(path))
    assert "my_loss" in LOSSES
    # Importing it again (e.g. from --plugin and SUPKD_PLUGINS) registers nothing twice.
    assert import_plugin(str(path)) is first


def test_environment_variable_and_export(plugin, monkeypatch):
    path = plugin("user_losses_d")
    plugin("user_losses_e", loss="other_loss")
    monkeypatch.setenv(ENV_VAR, str(path))
    done = load_plugins(["user_losses_e"], entry_points=False, export=True)
    assert done == [str(path), "user_losses_e"]
    assert {"my_loss", "other_loss"} <= set(LOSSES)
    assert os.environ[ENV_VAR].split(os.pathsep) == [str(path), "user_losses_e"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, r"--plugin 'no_such_plugin_mod': cannot import it \(ModuleNotFoundError: No "
               r"module named 'no_such_plugin_mod'\)"),
        ("raise RuntimeError('broken\\nplugin')\n",
         r"--plugin 'user_losses_f': cannot import it \(RuntimeError: broken plugin \(at "
         r".*user_losses_f\.py:1\)\)"),
    ],
)
def test_a_plugin_that_cannot_be_imported_is_a_one_line_user_error(
    plugin, capsys, text, expected
):
    name = "no_such_plugin_mod" if text is None else "user_losses_f"
    if text is not None:
        plugin(name, text=text)
    with pytest.raises(UserError, match=expected):
        load_plugins([name], entry_points=False)
    assert main(["--plugin", name, "losses"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert f"'{name}'" in err


def test_supkd_losses_lists_a_plugins_loss(plugin, capsys):
    path = plugin("user_losses_g")
    assert main(["--plugin", str(path), "losses", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["my_loss"]["arguments"] == {"scale": 1.0}
    assert rows["my_loss"]["module"] == "user_losses_g"
    assert rows["my_loss"]["label"] == "my_loss (mean |z_t - z_s|_1)"


def test_entry_points_of_an_installed_package_are_loaded(plugin, tmp_path):
    plugin("ep_losses", loss="ep_loss")
    dist = tmp_path / "ep_losses_pkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-losses-pkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{plugins.ENTRY_POINT_GROUP}]\nmine = ep_losses\n")
    assert "ep_loss" not in LOSSES
    assert "ep_losses" in load_plugins(environment=False)
    assert "ep_loss" in LOSSES
    # A broken entry point names itself and its package.
    (dist / "entry_points.txt").write_text(f"[{plugins.ENTRY_POINT_GROUP}]\nbad = nope_mod\n")
    with pytest.raises(UserError, match=r"entry point 'bad' = 'nope_mod' .*ep-losses-pkg"):
        load_plugins(environment=False)




@pytest.mark.slow
def test_supkd_plugin_train_distills_with_the_users_loss(plugin, tmp_path):
    """`supkd --plugin MODULE train ... task.loss=my_loss` as a real process, end to end."""
    from supkd.train import load_run_config, run

    teacher = tmp_path / "teacher"
    res = run(load_run_config({"name": "teacher"}, TINY), teacher, quiet=True)
    assert res["status"] == "completed"
    plugin("user_losses_h")
    cfg = tmp_path / "student.yaml"
    cfg.write_text(yaml.safe_dump({"name": "student"}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(tmp_path)])}
    env.pop(ENV_VAR, None)
    cmd = [sys.executable, "-m", "supkd", "--plugin", "user_losses_h", "train", str(cfg),
           *TINY, "task.name=distill", "task.loss=my_loss", "task.loss_args.scale=0.5",
           f"task.teacher={teacher}", "--out", str(tmp_path / "student"), "--quiet"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "student" / "result.json").read_text())
    assert result["status"] == "completed"
    saved = yaml.safe_load((tmp_path / "student" / "config.yaml").read_text())
    assert saved["task"]["loss"] == "my_loss" and saved["task"]["loss_args"] == {"scale": 0.5}
    assert (tmp_path / "my_loss.called").exists()  # the plugin's compute ran
    metrics = [json.loads(x) for x in (tmp_path / "student" / "metrics.jsonl").read_text()
               .splitlines()]
    assert metrics[-1]["train_kd"] > 0
    # Without the plugin the same command is a one-line user error naming the field.
    without = [sys.executable, "-m", "supkd", "train", str(cfg), *TINY, "task.name=distill",
               "task.loss=my_loss", f"task.teacher={teacher}", "--out", str(tmp_path / "x")]
    proc = subprocess.run(without, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 2
    assert "config field 'task.loss'" in proc.stderr and "'my_loss'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
