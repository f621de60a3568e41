"""supkd's own frames in a traceback, found by where the package really is.

A word in a path is no test: a virtual environment, a checkout or a PYTHONPATH entry may be
named after supkd and then every frame "contains supkd". The package's directory
(``supkd.__file__``'s parent, resolved) is what marks its frames.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import supkd

SUPKD_DIR = Path(supkd.__file__).resolve().parent

_FRAME = re.compile(r'^\s*File "(?P<path>[^"]+)", line \d+')


def supkd_frames(traceback_text: str, package_dir: Path = SUPKD_DIR) -> list[str]:
    """The ``File "...", line N`` lines of ``traceback_text`` whose file lies inside
    ``package_dir`` (supkd's source, by default)."""
    root = os.path.realpath(package_dir)
    out = []
    for line in traceback_text.splitlines():
        m = _FRAME.match(line)
        if m:
            path = os.path.realpath(m.group("path"))
            if os.path.commonpath([root, path]) == root:
                out.append(line)
    return out
