"""``.. supkd-api:: PACKAGE``: the API reference of one supkd package, generated.

A package that exports its API (``__all__``) is documented as that list, its lazily
imported names included (``supkd.train`` resolves them on first use, which autodoc would
not see). A package that exports nothing is documented by its public submodules, found by
walking it, so a new module appears without an edit here (``:submodules:`` forces this);
subpackages met on the way show their docstrings, their exports being documented in the
modules that define them.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType
from typing import Any, ClassVar

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles


def materialize(module: ModuleType) -> list[str]:
    """``module.__all__``, each name bound in the module's namespace (lazy exports)."""
    names = list(getattr(module, "__all__", []))
    for name in names:
        if name not in vars(module):
            setattr(module, name, getattr(module, name))
    return names


def submodules(package: ModuleType) -> list[str]:
    """Public submodules of ``package``, depth first, in name order."""
    if not hasattr(package, "__path__"):
        return []
    found = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        name = f"{package.__name__}.{info.name}"
        found.append(name)
        found += submodules(importlib.import_module(name))
    return found


class ApiDirective(SphinxDirective):
    required_arguments = 1
    option_spec: ClassVar[dict[str, Any]] = {"submodules": directives.flag}

    def run(self) -> list[nodes.Node]:
        self.env.note_reread()  # generated from the code: never cached
        name = self.arguments[0]
        package = importlib.import_module(name)
        lines = []
        exports = materialize(package)
        if exports and "submodules" not in self.options:
            # A name re-exported from another package is documented there (one target).
            foreign = [n for n in exports
                       if not getattr(getattr(package, n), "__module__", name).startswith(name)]
            lines += [f".. automodule:: {name}", "   :members:"]
            lines += [f"   :exclude-members: {', '.join(foreign)}", ""] if foreign else [""]
        else:
            lines += [f".. automodule:: {name}", ""]
            for sub in submodules(package):
                module = importlib.import_module(sub)
                title = f"``{sub}``"
                lines += [title, "-" * len(title), "", f".. automodule:: {sub}"]
                # A subpackage's exports are documented where they are defined (one
                # target per object); the subpackage shows its docstring only.
                lines += ["", ""] if hasattr(module, "__path__") else ["   :members:", ""]
        holder = nodes.container()
        nested_parse_with_titles(self.state, StringList(lines, self.get_source_info()[0]),
                                 holder)
        return holder.children
