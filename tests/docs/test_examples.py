"""Every example of the documentation is run by the tests, so none drifts from the code.

- Python examples are files in ``docs/examples/``, included into the pages; each is run
  here (a Python block written inline in a page is run too).
- YAML examples are files there too; each is loaded as the grid spec it says it is, from a
  folder laid out like a clone of the repository.
- Shell commands: every ``supkd`` command line (also after ``torchrun -m`` or ``ray job
  submit --``) is parsed by the CLI's own parser, configs of the repository are loaded with
  the command's overrides and grids are dry-run; other programs are checked for what they
  name (a script that exists and has the flags given, an extra that pyproject declares, a
  marker that is registered).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from docs_examples import SHELL, blocks, commands, included_files, pages
from docsite import DOCS, REPO

import supkd

# The first test to ask for the site pays for its build (a minute on a loaded 2-core box).
pytestmark = [pytest.mark.docs, pytest.mark.timeout(900)]
EXAMPLES = DOCS / "examples"
SRC = str(Path(supkd.__file__).resolve().parents[1])


def _run_python(code_or_path: str | Path, cwd: Path, timeout: int = 600) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    argv = [sys.executable, str(code_or_path)] if isinstance(code_or_path, Path) else [
        sys.executable, "-c", code_or_path]
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{code_or_path}:\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_every_included_file_exists_and_every_example_file_is_included():
    included = {p for page in pages() for p in included_files(page)}
    for path in included:
        assert path.is_file(), path
    for path in sorted(EXAMPLES.glob("*")):
        if path.suffix in (".py", ".yaml"):
            assert path.resolve() in included, f"{path.name} is on no page"


@pytest.mark.slow
def test_losses_quickstart_runs(tmp_path):
    out = _run_python(EXAMPLES / "losses_quickstart.py", tmp_path)
    assert out.splitlines()[0].startswith("['logit_mse', 'norm_mse', 'cosine', 'gram'")
    assert "tensor(" in out


@pytest.mark.slow
def test_my_losses_plugin_registers_a_loss_that_computes_its_formula(tmp_path):
    out = _run_python(
        "import torch\n"
        "from supkd.utils.plugins import load_plugins\n"
        f"load_plugins([{str(EXAMPLES / 'my_losses.py')!r}])\n"
        "from supkd.losses import LOSSES, build_loss\n"
        "s, t = torch.randn(8, 5, dtype=torch.float64), torch.randn(8, 5, dtype=torch.float64)\n"
        "got = build_loss('l1_kd', scale=2.0)(s, t)\n"
        "want = 2.0 * sum(float((t[i] - s[i]).abs().sum()) for i in range(8)) / 8\n"
        "print('l1_kd' in LOSSES, abs(float(got) - want) < 1e-12)\n", tmp_path)
    assert out.split() == ["True", "True"]


@pytest.mark.slow
def test_my_model_registers_a_model_that_rebuilds_from_its_spec(tmp_path):
    out = _run_python(
        "import torch\n"
        "from supkd.utils.plugins import load_plugins\n"
        f"load_plugins([{str(EXAMPLES / 'my_model.py')!r}])\n"
        "from supkd.models import create_model\n"
        "net = create_model('resnet18_narrow', num_classes=7)\n"
        "again = create_model(**net.spec)\n"
        "again.load_state_dict(net.state_dict())\n"
        "x = torch.randn(2, 3, 32, 32)\n"
        "net.eval(); again.eval()\n"
        "print(tuple(net(x).logits.shape), net.encoder.stages(x)['layer1'].shape[1],\n"
        "      bool(torch.equal(net(x).logits, again(x).logits)))\n", tmp_path)
    assert out.split() == ["(2,", "7)", "16", "True"]


@pytest.mark.slow
def test_own_models_example_trains_and_distills(tmp_path):
    out = _run_python(EXAMPLES / "own_models.py", tmp_path)
    match = re.search(r"student test accuracy: ([\d.]+)%", out)
    assert match and 0.0 <= float(match.group(1)) <= 100.0, out
    run = tmp_path / "runs" / "kd_run"
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2  # one line per epoch
    assert (run / "checkpoints" / "last.pt").is_file()


def test_yaml_examples_load_as_grid_specs_from_a_clone(tmp_path):
    from supkd.experiments.grid.spec import load_grid

    (tmp_path / "configs").symlink_to(REPO / "configs")
    for path in sorted(EXAMPLES.glob("*.yaml")):
        copy = tmp_path / path.name
        copy.write_text(path.read_text())
        spec = load_grid(copy)
        assert spec.cells, path.name
    ray = load_grid(tmp_path / "cifar10-ray.yaml")
    assert ray.resources["gpus"] == 0.25
    assert ray.cells["ce_teacher"].resources["gpus"] == 1


@pytest.mark.slow
def test_inline_python_blocks_run(tmp_path):
    found = [b for page in pages() for b in blocks(page) if b.lang == "python"]
    for block in found:
        _run_python(block.body, tmp_path)


def _script_flags_exist(tokens: list[str], where: str) -> list[str]:
    script = REPO / tokens[0]
    if not script.is_file():
        return [f"{where}: no script {tokens[0]}"]
    source = script.read_text(encoding="utf-8")
    return [f"{where}: {tokens[0]} has no option {tok}" for tok in tokens[1:]
            if tok.startswith("--") and f'"{tok.split("=")[0]}"' not in source]


def _supkd_argv(tokens: list[str]) -> list[str] | None:
    """The arguments after ``supkd`` in a command that runs supkd, else None."""
    if tokens[0] == "supkd":
        return tokens[1:]
    if tokens[0] == "torchrun" and "supkd" in tokens:
        return tokens[tokens.index("supkd") + 1:]
    if tokens[:2] == ["ray", "job"] and "--" in tokens:
        rest = tokens[tokens.index("--") + 1:]
        return rest[1:] if rest and rest[0] == "supkd" else None
    if tokens[:3] in (["python", "-m", "supkd"], ["python3", "-m", "supkd"]):
        return tokens[3:]
    return None


def _other_problems(tokens: list[str], where: str, extras: set[str], markers: set[str]):
    program = tokens[0]
    if program in ("python", "python3") and tokens[1:2] == ["-m"]:
        module = tokens[2]
        if module == "sphinx":
            assert (REPO / tokens[-2]).is_dir(), f"{where}: no folder {tokens[-2]}"
        else:
            assert module in ("pytest",), f"{where}: python -m {module}"
        return []
    if program in ("python", "python3", "bash"):
        return _script_flags_exist(tokens[1:], where)
    if program == "pip":
        named = re.findall(r"\[([\w,-]+)\]", " ".join(tokens))
        return [f"{where}: no extra '{e}' in pyproject.toml"
                for group in named for e in group.split(",") if e not in extras]
    if program == "pytest":
        return [f"{where}: marker '{m}' is not registered"
                for m in re.findall(r"\b(\w+)\b", " ".join(tokens[1:])) if m in ("slow", "docs")
                and m not in markers]
    if program in ("echo", "wandb", "cd", "export"):
        return []
    return [f"{where}: a program the docs test does not know: {program}"]


#: Commands the checker must refuse (run with the pages' commands: one process, one import).
BAD_COMMANDS = [
    (["train", "configs/fast/cifar10.yaml", "--run", "kd_cosine-s0", "task.los=cosine"],
     "task.los"),
    (["train", "configs/fast/cifar10.yaml", "--run", "kd_cosin-s0"], "kd_cosin-s0"),
    (["grid", "configs/demo_baselines.yaml", "--no-such-flag"], "--no-such-flag"),
    (["trian", "x.yaml"], "trian"),
    (["train", "configs/fast/cifar10.yaml", "--run", "ce_teacher-s0", "optim.lr=-1"],
     "optim.lr"),
]


@pytest.mark.slow
def test_shell_commands_are_accepted_by_what_they_run(tmp_path):
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    extras = set(project["project"]["optional-dependencies"])
    markers = {m.split(":")[0] for m in project["tool"]["pytest"]["ini_options"]["markers"]}
    supkd_cmds, problems, total = [], [], 0
    for page in pages():
        for block in blocks(page):
            if block.lang not in SHELL:
                continue
            for tokens in commands(block.body, block.lang):
                total += 1
                where = f"{page.relative_to(REPO)}: {' '.join(tokens)[:80]}"
                argv = _supkd_argv(tokens)
                if argv is not None:
                    supkd_cmds.append(argv)
                else:
                    problems += _other_problems(tokens, where, extras, markers)
    assert total > 40 and len(supkd_cmds) > 25  # the pages have examples to check
    out = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("check_commands.py")),
         json.dumps(supkd_cmds + [argv for argv, _ in BAD_COMMANDS]), str(tmp_path)],
        env={**os.environ, "OMP_NUM_THREADS": "1",
             "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])},
        capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.splitlines()[-1])
    # the checker refuses each bad command, naming what is wrong ...
    for argv, named in BAD_COMMANDS:
        line = f"supkd {' '.join(argv)}:"
        refused = [p for p in found if p.startswith(line)]
        assert len(refused) == 1 and named in refused[0].removeprefix(line), (argv, found)
    # ... and none of the pages' commands
    problems += [p for p in found if not any(
        p.startswith(f"supkd {' '.join(argv)}:") for argv, _ in BAD_COMMANDS)]
    assert problems == [], "\n".join(problems)


def test_shell_blocks_split_into_commands():
    assert commands("A=1 supkd demo --jobs 2 && pytest -q  # two\nsupkd x \\\n  --y\n") == [
        ["supkd", "demo", "--jobs", "2"], ["pytest", "-q"], ["supkd", "x", "--y"]]
    transcript = "$ supkd losses\nname  paper\nlogit_mse  Eq. 1\n$ supkd demo --jobs 2\n"
    assert commands(transcript, "console") == [
        ["supkd", "losses"], ["supkd", "demo", "--jobs", "2"]]
