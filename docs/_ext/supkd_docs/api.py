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


def foreign(module: ModuleType, inside: str) -> list[str]:
    """Exported names of ``module`` defined outside ``inside`` (a package or the module
    itself): they are documented where they are defined, so each object has one target."""
    return [n for n in getattr(module, "__all__", [])
            if not str(getattr(getattr(module, n), "__module__", inside)).startswith(inside)]


def _exclude(names: list[str]) -> list[str]:
    return [f"   :exclude-members: {', '.join(names)}"] if names else []


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
        if materialize(package) and "submodules" not in self.options:
            lines += [f".. automodule:: {name}", "   :members:",
                      *_exclude(foreign(package, inside=name)), ""]
        else:
            lines += [f".. automodule:: {name}", ""]
            for sub in submodules(package):
                module = importlib.import_module(sub)
                title = f"``{sub}``"
                lines += [title, "-" * len(title), "", f".. automodule:: {sub}"]
                # A subpackage's exports are documented where they are defined (one
                # target per object); the subpackage shows its docstring only.
                if hasattr(module, "__path__"):
                    lines += ["", ""]
                else:
                    materialize(module)
                    lines += ["   :members:", *_exclude(foreign(module, inside=sub)), ""]
        holder = nodes.container()
        nested_parse_with_titles(self.state, StringList(lines, self.get_source_info()[0]),
                                 holder)
        return holder.children
