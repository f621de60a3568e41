"""Refusal catalogue, round 2 (issue 25, class 5): W&B options that cannot work are refused
before any training, exit 2, one line saying what is missing and how to fix it; a grid
names the run that needs it, ``--dry-run`` included.

The real wandb package is used, offline: credentials are looked for in the environment and
a ``.netrc`` in a test's own HOME; no test starts a W&B run in online mode, so no server is
ever contacted.
"""

from __future__ import annotations

import sys

import pytest
import yaml
from catalogue import TINY, refused, write_cfg

from supkd.config import WandbConfig
from supkd.train.loggers import check_wandb


@pytest.fixture(autouse=True)
def _no_login(tmp_path, monkeypatch):
    """A HOME with no ~/.netrc and no W&B variables: a machine where nobody logged in
    (matplotlib may cache its fonts there: not among the files a refusal must not write)."""
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "WANDB_IDENTITY_TOKEN_FILE",
                "NETRC"):
        monkeypatch.delenv(var, raising=False)
    return home


def _train(tmp_path, *overrides: str) -> list[str]:
    return ["train", str(write_cfg(tmp_path / "c.yaml")), *overrides, "--out",
            str(tmp_path / "out"), "--quiet"]


@pytest.mark.parametrize("overrides", [
    ["train.wandb.project=p", "train.wandb.mode=online"],
    ["train.wandb.project=p"],  # no mode, no WANDB_MODE: wandb's default is online
])
def test_online_without_a_login_is_refused_before_training(tmp_path, capsys, overrides):
    refused(capsys, _train(tmp_path, *overrides), "train.wandb.mode", "wandb login",
            "WANDB_API_KEY", "mode: offline", watch=[tmp_path], allowed=[tmp_path / "home"])


def test_a_netrc_for_another_host_is_no_login(tmp_path, capsys, _no_login):
    (_no_login / ".netrc").write_text("machine example.org login user password secret\n")
    refused(capsys, _train(tmp_path, "train.wandb.project=p", "train.wandb.mode=online"),
            "train.wandb.mode", "wandb login", watch=[tmp_path],
            allowed=[tmp_path / "home"])


@pytest.mark.parametrize("project", ["' '", "'\t'"])
def test_a_blank_project_is_refused(tmp_path, capsys, project):
    refused(capsys, _train(tmp_path, f"train.wandb.project={project}",
                           "train.wandb.mode=offline"),
            "train.wandb.project", "empty", watch=[tmp_path], allowed=[tmp_path / "home"])


def test_the_login_is_found_where_wandb_login_puts_it(_no_login, monkeypatch):
    """The check's positive side, without a server: a key in the environment, or the
    ~/.netrc entry `wandb login` writes for api.wandb.ai (or WANDB_BASE_URL's host)."""
    cfg = WandbConfig(project="p", mode="online")
    with pytest.raises(Exception, match="wandb login"):
        check_wandb(cfg)
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    check_wandb(cfg)
    monkeypatch.delenv("WANDB_API_KEY")
    (_no_login / ".netrc").write_text("machine wandb.example.org login user password "
                                      + "k" * 40 + "\n")
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")
    check_wandb(cfg)
    check_wandb(WandbConfig(project="p", mode="offline"))  # offline needs no login
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.delenv("WANDB_BASE_URL")
    check_wandb(WandbConfig(project="p"))  # off: nothing to check


def _grid(tmp_path, wandb: dict) -> str:
    spec = tmp_path / "g.yaml"
    base = {k: v for k, v in TINY.items() if k != "name"}
    spec.write_text(yaml.safe_dump({
        "grid": "w", "base": base,
        "runs": {"plain": {"config": {"task": {"name": "ce"}}},
                 "logged": {"config": {"task": {"name": "ce"}, "train": {"wandb": wandb}}}},
    }))
    return str(spec)


@pytest.mark.parametrize("dry", [False, True])
def test_a_grid_without_wandb_installed_names_the_run(tmp_path, capsys, monkeypatch, dry):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    argv = ["grid", _grid(tmp_path, {"project": "p", "mode": "offline"}), "--out",
            str(tmp_path / "runs")] + (["--dry-run"] if dry else [])
    line = refused(capsys, argv, "grid run 'logged-s0'", "train.wandb.project",
                   "pip install 'supkd[wandb]'", watch=[tmp_path],
                   allowed=[tmp_path / "home"])
    assert "plain" not in line


def test_a_grid_online_without_login_is_refused_before_any_run(tmp_path, capsys):
    argv = ["grid", _grid(tmp_path, {"project": "p", "mode": "online"}), "--out",
            str(tmp_path / "a" / "runs")]
    refused(capsys, argv, "grid run 'logged-s0'", "wandb login", watch=[tmp_path],
            allowed=[tmp_path / "home"])
    assert not (tmp_path / "a").exists()  # the plain run did not start either


def test_train_without_wandb_installed_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    refused(capsys, _train(tmp_path, "train.wandb.project=p", "train.wandb.mode=offline"),
            "train.wandb.project", "pip install 'supkd[wandb]'", watch=[tmp_path],
            allowed=[tmp_path / "home"])
