"""The loss, model and configuration pages are generated from the code: everything the
registries and config dataclasses hold is on them, and a loss and a config field that a
plugin registers at build time appear with no documentation edit."""

from __future__ import annotations

import dataclasses
import html
import re
import subprocess
import sys
from pathlib import Path

import pytest
from docsite import (
    DOCS,
    PROBE_EQ,
    PROBE_FIELD,
    PROBE_LOSS,
    PROBE_MEANING,
    PROBE_TASK,
    REPO,
    Site,
)

# The first test to ask for the site pays for its build (a minute on a loaded 2-core box).
pytestmark = [pytest.mark.docs, pytest.mark.slow, pytest.mark.timeout(900)]


def _text(path: Path) -> str:
    """The page's text with tags removed and entities decoded, whitespace collapsed."""
    raw = re.sub(r"<[^>]+>", " ", path.read_text(encoding="utf-8"))
    return " ".join(html.unescape(raw).split())


def _section(text: str, start: str, end: str | None = None) -> str:
    at = text.index(start)
    stop = text.index(end, at + len(start)) if end else len(text)
    return text[at:stop]


def test_plugin_loss_appears_on_the_losses_page(site: Site):
    assert site.returncode == 0, site.log[-4000:]
    text = _text(site.html / "reference" / "losses.html")
    # in the summary table: name, label, equation, summary, argument with its default
    row = _section(text, PROBE_LOSS, "SupConLoss")
    for cell in ("Probe L1", PROBE_EQ, "a loss registered by the docs tests", "probe=3.5"):
        assert cell in row, cell
    # and in its own section, with the docstring's words and its source file
    sec = _section(text, f"{PROBE_LOSS} ¶")
    assert "divided by probe" in sec and "docs_probe_plugin.py" in sec


def test_plugin_config_field_appears_on_the_configuration_page(site: Site):
    text = _text(site.html / "reference" / "configuration.html")
    sec = _section(text, f"task: {PROBE_TASK}", "Data sets")
    # field, type, default, bound and the comment beside it in the plugin's dataclass
    assert f"{PROBE_FIELD} float 0.25 > 0, ≤ 2 {PROBE_MEANING}" in sec, sec[:600]
    # the field it inherits keeps the meaning written on the built-in task's field
    assert "label_smoothing float 0.0 ≥ 0, < 1 of the CE targets" in sec


def test_every_registered_loss_model_and_config_field_is_on_its_page(site: Site):
    # the registries as a fresh process with the same plugin sees them
    probe = (
        "import dataclasses, json, supkd.train.tasks\n"
        "from supkd.losses import LOSSES\n"
        "from supkd.models import MODELS, MODEL_FAMILIES\n"
        "from supkd.config import Config, TASK_SECTIONS\n"
        "from supkd.data import DATASETS\n"
        "from supkd.experiments.tables import TABLES\n"
        "from supkd.utils.plugins import load_plugins\n"
        "load_plugins()\n"
        "def fields(c): return [f.name for f in dataclasses.fields(c)]\n"
        "print(json.dumps({'losses': list(LOSSES), 'models': list(MODELS),\n"
        "  'families': list(MODEL_FAMILIES), 'tasks': {k: fields(v) for k, v in\n"
        "  TASK_SECTIONS.items()}, 'data': list(DATASETS), 'tables': list(TABLES)}))\n"
    )
    import json
    import os

    env = {**os.environ, "SUPKD_PLUGINS": str(site.html.parent / "docs_probe_plugin.py")}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                         text=True, check=True).stdout
    have = json.loads(out)
    assert PROBE_LOSS in have["losses"] and PROBE_TASK in have["tasks"]
    losses = _text(site.html / "reference" / "losses.html")
    for name in have["losses"]:
        assert f"{name} ¶" in losses, name  # its own section
    models = _text(site.html / "reference" / "models.html")
    for name in have["models"]:
        assert name in models, name
    for prefix in have["families"]:
        assert f"{prefix}/<name>" in models, prefix
    config = _text(site.html / "reference" / "configuration.html")
    for task, names in have["tasks"].items():
        sec = _section(config, f"task: {task} ¶")
        for name in names:
            assert name in sec, (task, name)
    for name in have["data"]:
        assert name in _section(config, "Data sets"), name
    paper = _text(site.html / "guide" / "paper.html")
    assert len(have["tables"]) >= 5
    for name in have["tables"]:
        assert name in _section(paper, "The report's tables", "Layer-wise CKA"), name


def test_every_config_field_of_the_schema_has_a_row_with_its_meaning(site: Site):
    from supkd.config import Config

    config = _text(site.html / "reference" / "configuration.html")
    queue = [Config]
    while queue:
        cls = queue.pop()
        title = f"{cls.SECTION} ¶" if cls.SECTION else "(top level) ¶"
        sec = _section(config, title)
        for f in dataclasses.fields(cls):
            sub = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
            if dataclasses.is_dataclass(sub):
                if cls.SECTION != "" or f.name != "task":
                    queue.append(type(sub))
                continue
            assert re.search(rf"\b{f.name} \S", sec), (cls.SECTION, f.name)


def test_a_field_without_meaning_fails_the_build_naming_it(tmp_path):
    """The generator refuses silence: a config field with no comment or docstring line
    is a warning naming it, so the -W build fails until the code documents it."""
    (tmp_path / "conf.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(DOCS / '_ext')!r})\n"
        "extensions = ['supkd_docs']\n"
    )
    (tmp_path / "index.rst").write_text("Config\n======\n\n.. supkd-config::\n")
    plugin = tmp_path / "silent_plugin.py"
    plugin.write_text(
        "from dataclasses import dataclass\n"
        "from supkd.train.tasks import register_task\n"
        "from supkd.train.tasks.ce import CEConfig, CETask\n"
        "@dataclass\n"
        "class SilentConfig(CEConfig):\n"
        "    name: str = 'silent'\n"
        "    undocumented_knob: int = 3\n"
        "@register_task\n"
        "class SilentTask(CETask):\n"
        "    Config = SilentConfig\n"
        "    name = 'silent'\n"
    )
    import os

    import supkd

    src = str(Path(supkd.__file__).resolve().parents[1])
    env = {**os.environ, "SUPKD_PLUGINS": str(plugin),
           "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html", str(tmp_path),
         str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "config field 'task.undocumented_knob'" in proc.stderr
    assert "SilentConfig" in proc.stderr


def test_generated_pages_restate_nothing_by_hand():
    # The page sources hold directives, not tables copied from the code.
    for page in ("losses.rst", "models.rst", "configuration.rst"):
        source = (DOCS / "reference" / page).read_text(encoding="utf-8")
        assert ".. supkd-" in source
        assert "list-table" not in source and not re.search(r"^\s*[+|]", source, re.M), page
    assert REPO.joinpath("src", "supkd").is_dir()
