"""The floor plan of src/supkd, read from the source with ``ast``: every import counts, also
one inside a function (import-linter's ``layers`` contract would miss those).

Layers, lowest first; a module may import its own layer and those below it:
errors, utils, config, vocab -> losses, models, data, analysis -> importers, train -> experiments
-> commands, cli, __main__. No import cycle between modules. supkd's own modules are
imported lazily (inside a function) only at the CLI edge, for start-up time.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import supkd

ROOT = Path(supkd.__file__).resolve().parent
LAYERS = [
    {"errors", "utils", "config", "vocab"},
    {"losses", "models", "data", "analysis"},
    {"importers", "train"},
    {"experiments"},
    {"commands", "cli", "__main__"},
]
#: Where a lazy import of supkd's own modules is at home: the top floor.
CLI_EDGE = LAYERS[-1]
#: Modules outside the CLI edge that still import supkd modules inside functions, left for
#: the refactors of their own floors (train, experiments.grid, importers). Shrink it; a
#: module not listed here may not start.
# Besides the CLI, the one edge where a process starts: a grid worker imports its job module
# before the job sets the worker's thread count (OMP_NUM_THREADS is read when torch is first
# imported), so the job module imports the engine inside the job functions.
LAZY_LEFT = {"supkd.experiments.grid.jobs"}


def _modules() -> dict[str, Path]:
    mods = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = path
    return mods


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[tuple[str, int, bool]]:
    """(imported supkd module, line, inside a function) for every import in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    in_function = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            in_function |= {id(n) for n in ast.walk(node) if n is not node}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found = set()
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
        for target in sorted(found):
            yield target, node.lineno, id(node) in in_function


GRAPH = {name: list(_imports(name, path)) for name, path in MODULES.items()}


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module}: its top-level name {top!r} has no floor in LAYERS")


def test_every_module_has_a_floor():
    assert len(MODULES) > 50
    for name in MODULES:
        if name != "supkd":
            _layer(name)


def test_nothing_imports_upward_not_even_inside_a_function():
    upward = [
        f"{MODULES[a].relative_to(ROOT.parent)}:{line} {a} (floor {_layer(a)}) imports {b} "
        f"(floor {_layer(b)})"
        for a, edges in GRAPH.items() if a != "supkd"
        for b, line, _ in edges if b != "supkd" and _layer(b) > _layer(a)
    ]
    assert upward == []


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    edges = {a: sorted({b for b, _, _ in out}) for a, out in GRAPH.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(edges[w])))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_no_import_cycle():
    assert _cycles() == []


def test_the_checks_catch_what_they_are_for(monkeypatch):
    # The checks are only worth something if they fail: an upward import inside a function
    # and a cycle, planted in the graph, are found.
    planted = dict(GRAPH)
    upward = ("supkd.train.engine", 1, True)
    planted["supkd.losses.cosine"] = [*GRAPH["supkd.losses.cosine"], upward]
    planted["supkd.errors"] = [*GRAPH["supkd.errors"], ("supkd.utils.registry", 1, False)]
    planted["supkd.utils.registry"] = [*GRAPH["supkd.utils.registry"], ("supkd.errors", 1, True)]
    monkeypatch.setitem(globals(), "GRAPH", planted)
    with pytest.raises(AssertionError, match=r"supkd\.losses\.cosine \(floor 1\) imports "
                                             r"supkd\.train\.engine \(floor 2\)"):
        test_nothing_imports_upward_not_even_inside_a_function()
    assert ["supkd.errors", "supkd.utils.registry"] in _cycles()
    # And a function-level import is seen as one.
    edges = dict(((b, inside) for b, _, inside in GRAPH["supkd.commands.report"]))
    assert edges.get("supkd.experiments.report") is True


def test_lazy_imports_of_supkd_only_at_the_cli_edge():
    lazy = {
        a: sorted({b for b, _, inside in edges if inside})
        for a, edges in GRAPH.items()
        if a != "supkd" and _layer(a) < _layer("supkd.cli")
    }
    offenders = {a: bs for a, bs in lazy.items() if bs and a not in LAZY_LEFT}
    assert offenders == {}


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["train", "--help"], []])
def test_the_cli_starts_without_importing_torch(argv):
    code = (
        "import sys\n"
        "from supkd.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted(m for m in ('torch', 'numpy', 'torchvision', 'matplotlib', 'timm', "
        "'wandb') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT.parent)})
    assert proc.returncode == 0, proc.stderr
    assert "supkd" in proc.stdout
