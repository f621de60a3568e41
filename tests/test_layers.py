"""The floor plan of src/supkd and benchmarks/, read from the source with ``ast``: every
import counts, also one inside a function (import-linter's ``layers`` contract would miss
those).

Layers, lowest first; a module may import its own layer and those below it:
errors, utils, config, vocab -> losses, models, data, analysis -> importers, train -> experiments
-> commands, cli, __main__. No import cycle between modules. supkd's own modules are
imported lazily (inside a function) only at the CLI edge, for start-up time.

benchmarks/ stands above the whole library: a benchmark may import any supkd module and
``benchmarks/common.py`` (which imports no other benchmark), nothing in supkd imports a
benchmark, and a benchmark takes supkd's constants from supkd instead of copying them. In both
trees no function is longer than 100 lines (one screen for a newcomer).
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
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
#: The one benchmark module the others import (shared pieces: data, timing, tables).
BENCH_COMMON = "common"
MAX_FUNCTION_LINES = 100
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


# ------------------------------------------------------------------------- function length
def _long_functions(path: Path, source: str | None = None) -> list[str]:
    """``path:line name is N lines`` for every function (or method) over the limit; the
    count runs from the ``def`` line to the last line of the body, as archscan counts."""
    tree = ast.parse(path.read_text(encoding="utf-8") if source is None else source)
    return [
        f"{path}:{node.lineno} {node.name} is {node.end_lineno - node.lineno + 1} lines"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]


@pytest.mark.parametrize("tree", ["src", "benchmarks"])
def test_no_function_over_100_lines(tree):
    root = ROOT if tree == "src" else BENCHMARKS
    files = sorted(root.rglob("*.py"))
    assert files, f"no Python files under {root}"
    assert [line for path in files for line in _long_functions(path)] == []


def test_the_length_check_counts_a_long_function(tmp_path):
    def body(indent: str) -> str:
        return "".join(f"{indent}x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES - 1))

    fits = f"def f():\n{body('    ')}"  # the def line + 99 body lines: exactly the limit
    assert _long_functions(tmp_path / "a.py", fits) == []
    over = f"class C:\n    def g(self):\n{body('        ')}        return 1\n"
    assert _long_functions(tmp_path / "b.py", over) == [f"{tmp_path / 'b.py'}:2 g is 101 lines"]


# ------------------------------------------------------------------------------ benchmarks
def _bench_modules() -> dict[str, Path]:
    return {p.stem: p for p in sorted(BENCHMARKS.glob("*.py"))}


BENCH_MODULES = _bench_modules()


def _bench_imports(path: Path, source: str | None = None) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import of a benchmark (``from M import x``: M)."""
    tree = ast.parse(path.read_text(encoding="utf-8") if source is None else source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        else:
            continue
        for name in names:
            yield name, node.lineno


def _bench_problems(name: str, path: Path, source: str | None = None) -> list[str]:
    problems = []
    for target, line in _bench_imports(path, source):
        top = target.split(".")[0]
        where = f"benchmarks/{path.name}:{line}"
        if top in BENCH_MODULES and top != name and top != BENCH_COMMON:
            problems.append(f"{where} imports the benchmark {top!r} (only {BENCH_COMMON!r})")
        if name == BENCH_COMMON and top in BENCH_MODULES and top != name:
            problems.append(f"{where}: {BENCH_COMMON} imports the benchmark {top!r}")
        if top == "supkd" and target not in MODULES:
            problems.append(f"{where} imports {target}, which supkd does not have")
    return problems


def test_benchmarks_import_supkd_and_common_only():
    assert BENCH_COMMON in BENCH_MODULES and len(BENCH_MODULES) > 3
    problems = [p for name, path in BENCH_MODULES.items() for p in _bench_problems(name, path)]
    assert problems == []


def test_nothing_in_supkd_imports_a_benchmark():
    offenders = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{name}:{node.lineno} imports {m}" for m in mods
                          if m.split(".")[0] == "benchmarks"]
    assert offenders == []


def test_the_benchmark_checks_catch_what_they_are_for(tmp_path):
    bad = "import kd_throughput\nfrom supkd.losses.no_such_loss import X\n"
    found = _bench_problems("cka", tmp_path / "cka.py", bad)
    assert found == [
        "benchmarks/cka.py:1 imports the benchmark 'kd_throughput' (only 'common')",
        "benchmarks/cka.py:2 imports supkd.losses.no_such_loss, which supkd does not have",
    ]
    assert _bench_problems("common", tmp_path / "common.py", "import cka\n") == [
        "benchmarks/common.py:1 imports the benchmark 'cka' (only 'common')",
        "benchmarks/common.py:1: common imports the benchmark 'cka'",
    ]
    good = "from common import sync\nfrom supkd.data import NORMALIZATION\nimport torch\n"
    assert _bench_problems("cka", tmp_path / "cka.py", good) == []


def _float_tuples(source: str) -> Iterator[tuple[tuple[float, ...], int]]:
    """Every tuple or list literal of three or more float constants, with its line."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Tuple | ast.List) and len(node.elts) >= 3 and all(
            isinstance(e, ast.Constant) and isinstance(e.value, float) for e in node.elts
        ):
            yield tuple(e.value for e in node.elts), node.lineno


def _supkd_stats() -> dict[tuple[float, ...], str]:
    """Every per-channel statistic supkd registers (data sets and importers' teachers)."""
    from supkd.data import NORMALIZATION
    from supkd.importers.input_norm import INPUT_NORMS

    stats = {}
    for table, where in ((NORMALIZATION, "supkd.data NORMALIZATION"),
                         (INPUT_NORMS, "supkd.importers INPUT_NORMS")):
        for key, (mean, std) in table.items():
            stats[tuple(mean)] = stats[tuple(std)] = f"{where}[{key!r}]"
    return stats


def test_benchmarks_take_supkd_constants_from_supkd():
    stats = _supkd_stats()
    copies = [
        f"benchmarks/{path.name}:{line} repeats {stats[values]} {values}"
        for path in BENCH_MODULES.values()
        for values, line in _float_tuples(path.read_text(encoding="utf-8"))
        if values in stats
    ]
    assert copies == []
    # the check sees a copy
    planted = "MEAN = (0.4913, 0.4821, 0.4465)\n"
    assert [v for v, _ in _float_tuples(planted) if v in stats] == [(0.4913, 0.4821, 0.4465)]
