"""Build the documentation site once per test session, as CI and a user would.

The build runs ``python -m sphinx -W --keep-going`` in a fresh process (warnings are
errors) against the supkd this test session imports, with one plugin module named in
``SUPKD_PLUGINS``: it registers a loss and a task whose section has a field of its own,
which must then appear on the generated pages with no documentation edit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import supkd

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"

#: What the plugin registers (the tests look for these on the built pages).
PROBE_LOSS = "docs_probe_l1"
PROBE_EQ = "mean_i |z_t - z_s|_1 / probe"
PROBE_TASK = "docs_probe"
PROBE_FIELD = "probe_strength"
PROBE_MEANING = "how hard the probe pulls, in probe units"

PLUGIN = f'''
"""A plugin written by the docs tests: one loss, one task with a field of its own."""
from dataclasses import dataclass

from supkd.config import bounded
from supkd.losses import KDLoss, register_loss
from supkd.train.tasks import register_task
from supkd.train.tasks.ce import CEConfig, CETask


@register_loss("{PROBE_LOSS}")
class ProbeL1(KDLoss):
    """L1 distance of teacher and student vectors, divided by ``probe``.

    Args:
        probe: the divisor, > 0.
    """

    label = "Probe L1"
    paper_eq = "{PROBE_EQ}"
    summary = "a loss registered by the docs tests"

    def __init__(self, probe: float = 3.5) -> None:
        super().__init__()
        self.probe = probe

    def compute(self, student, teacher, labels):
        return (teacher - student).abs().sum(dim=1).mean() / self.probe


@dataclass
class ProbeConfig(CEConfig):
    name: str = "{PROBE_TASK}"
    {PROBE_FIELD}: float = bounded(0.25, gt=0, le=2)  # {PROBE_MEANING}


@register_task
class ProbeTask(CETask):
    Config = ProbeConfig
    name = "{PROBE_TASK}"
'''


@dataclass(frozen=True)
class Site:
    html: Path  # the built site
    log: str  # sphinx's stdout + stderr
    returncode: int
    seconds: float


def build_site(tmp: Path) -> Site:
    plugin = tmp / "docs_probe_plugin.py"
    plugin.write_text(PLUGIN)
    out = tmp / "html"
    src = str(Path(supkd.__file__).resolve().parents[1])  # the supkd under test, not main's
    env = {**os.environ, "SUPKD_PLUGINS": str(plugin), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(tmp / "doctrees"), str(DOCS), str(out)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    return Site(out, proc.stdout + proc.stderr, proc.returncode, time.perf_counter() - start)
