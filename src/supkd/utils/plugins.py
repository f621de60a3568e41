"""Plugins: a user's own modules that register losses, models, data sets or tasks.

A plugin is an ordinary Python module whose import registers things with the decorators of
supkd (``@register_loss``, ``@register_model``, ``@register_dataset``, ``@register_task``).
supkd imports plugins in three ways, all before a ``supkd`` command runs:

- ``supkd --plugin MODULE COMMAND ...`` (repeatable): MODULE is a module name importable
  from ``sys.path`` or the current folder (``my_losses``, ``my_pkg.losses``), or the path of
  a ``.py`` file (``./my_losses.py``);
- the ``SUPKD_PLUGINS`` environment variable: such names separated by ``os.pathsep``. The
  CLI adds its ``--plugin`` modules to it, so that processes a command starts (grid
  workers, ``torchrun`` ranks) can import the same plugins with :func:`load_plugins`;
- an installed distribution's entry points in the ``supkd.plugins`` group, e.g. in its
  ``pyproject.toml``::

      [project.entry-points."supkd.plugins"]
      my_losses = "my_pkg.losses"

A plugin that cannot be imported (not found, or its code raises) is a :class:`UserError`
naming it, which the CLI prints as one line with exit code 2. In a library session, import
your module yourself (or call :func:`load_plugins`).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from supkd.errors import SupkdWarning, UserError

__all__ = ["ENTRY_POINT_GROUP", "ENV_VAR", "import_plugin", "load_plugins"]

ENTRY_POINT_GROUP = "supkd.plugins"
ENV_VAR = "SUPKD_PLUGINS"


def _why(exc: BaseException) -> str:
    """``ExcType: message (at file:line)`` on one line, the line being the innermost frame."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    # The innermost frame of the user's code, not of the import machinery.
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith("<frozen") and "importlib" not in f.filename
              and f.filename != __file__]
    if isinstance(exc, SyntaxError) and exc.filename:
        frames = [traceback.FrameSummary(exc.filename, exc.lineno or 0, "")]
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {text}{where}"


def _is_path(spec: str) -> bool:
    return spec.endswith(".py") or os.sep in spec or (os.altsep is not None and os.altsep in spec)


def _import_file(path: Path) -> ModuleType:
    path = path.expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no file {path}")
    name = path.stem
    loaded = sys.modules.get(name)
    if loaded is not None and getattr(loaded, "__file__", None) == str(path):
        return loaded  # imported before: registering again would refuse its own names
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _import_name(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        # `supkd` (a console script) does not put the current folder on sys.path as
        # `python -m supkd` does; look there too before giving up.
        cwd = os.getcwd()
        top = name.split(".")[0]
        if exc.name != top or cwd in sys.path or "" in sys.path:
            raise
        sys.path.append(cwd)
        return importlib.import_module(name)


def import_plugin(spec: str, *, source: str = "plugin") -> ModuleType:
    """Import one plugin: a module name or a ``.py`` path. ``source`` names where it came
    from in the error (``--plugin``, ``SUPKD_PLUGINS``). Raises UserError naming it."""
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(f"{source}: expected a module name or a .py file, got {spec!r}")
    spec = spec.strip()
    try:
        return _import_file(Path(spec)) if _is_path(spec) else _import_name(spec)
    except SystemExit as exc:
        # Legal, but it would end supkd silently (exit 0 for sys.exit()) before the command
        # ran; what the module registered before the call stays registered.
        # The plugin's own line, not that of a package that wraps sys.exit (wandb does).
        frames = [f for f in traceback.extract_tb(exc.__traceback__)
                  if "site-packages" not in f.filename and "importlib" not in f.filename
                  and not f.filename.startswith("<") and f.filename != __file__]
        where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
        warnings.warn(f"{source} {spec!r}: called sys.exit({exc.code!r}){where} while being "
                      "imported; supkd ignored it and goes on (what the module registers "
                      "after that line is missing)", SupkdWarning, stacklevel=2)
        return sys.modules.get(Path(spec).stem if _is_path(spec) else spec) or ModuleType(spec)
    except Exception as exc:
        raise UserError(f"{source} {spec!r}: cannot import it ({_why(exc)})") from exc


def _entry_point_plugins() -> list[str]:
    loaded = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(getattr(ep, "dist", None), "name", None) or "an installed package"
        try:
            ep.load()
        except Exception as exc:
            raise UserError(
                f"entry point {ep.name!r} = {ep.value!r} (group {ENTRY_POINT_GROUP}, from "
                f"{dist}): cannot import it ({_why(exc)})"
            ) from exc
        loaded.append(ep.value)
    return loaded


def load_plugins(
    modules: Sequence[str] = (),
    *,
    environment: bool = True,
    entry_points: bool = True,
    export: bool = False,
) -> list[str]:
    """Import the plugins of the ``supkd.plugins`` entry points, of ``SUPKD_PLUGINS`` and
    ``modules`` (in that order); return what was imported. Importing one twice is harmless.

    ``export``: add ``modules`` to ``SUPKD_PLUGINS`` in ``os.environ`` so that child
    processes inherit them (paths made absolute). Raises UserError naming a plugin that
    cannot be imported.
    """
    done = _entry_point_plugins() if entry_points else []
    inherited = os.environ.get(ENV_VAR, "") if environment else ""
    for spec in (s for s in inherited.split(os.pathsep) if s.strip()):
        import_plugin(spec, source=ENV_VAR)
        done.append(spec)
    for spec in modules:
        import_plugin(spec, source="--plugin")
        done.append(spec)
    if export and modules:
        absolute = [str(Path(m).expanduser().resolve()) if _is_path(m) else m for m in modules]
        have = [s for s in os.environ.get(ENV_VAR, "").split(os.pathsep) if s]
        os.environ[ENV_VAR] = os.pathsep.join(have + [m for m in absolute if m not in have])
    return done
