"""Sphinx configuration of the supkd documentation site.

Build (warnings are errors): ``python -m sphinx -W --keep-going -b html docs docs/_build/html``.
The loss, model and configuration pages are generated at build time by the local
extension ``supkd_docs`` (``docs/_ext/``) from the registries and the config dataclasses of
the supkd that is imported, so plugins named in ``SUPKD_PLUGINS`` appear too.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))

import supkd  # noqa: E402  (after the path change: the version shown is the imported one)

project = "supkd"
author = "the supkd developers"
copyright = "the supkd developers"
release = version = supkd.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "supkd_docs",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "README.md", "examples/README.md"]

myst_enable_extensions = ["colon_fence", "dollarmath", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"  # no "args (Any)" for nn.Module's init
autodoc_default_options = {"show-inheritance": True}
smartquotes = False  # "--out" stays two hyphens in generated text
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "furo"
html_title = f"supkd {release}"
html_static_path: list[str] = []
