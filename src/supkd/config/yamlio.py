"""The one YAML reader of supkd (run configs and grid specs), its merge rule and overrides.

- :func:`read_yaml`: a file as a dict, with ``extends: other.yaml`` (a path relative to the
  file, or a list of them, merged in order) resolved; the result has no ``extends`` left.
- :func:`merge`: the one merge rule. Mappings merge key by key, at every depth (``meta``
  included: a grid entry adds keys to the grid's ``meta``); any other value (a list, a
  number, ``null``) replaces what was there.
- :func:`parse_overrides` / :func:`apply_overrides`: dotted ``key=value`` strings
  (``optim.lr=0.1``), the values read as YAML.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from supkd.errors import ConfigError

__all__ = ["apply_overrides", "merge", "parse_overrides", "read_yaml"]


def merge(base: Mapping[str, Any], top: Mapping[str, Any] | None) -> dict[str, Any]:
    """``top`` merged into a deep copy of ``base`` (see the module docstring)."""
    out = copy.deepcopy(dict(base))
    for k, v in (top or {}).items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _load_text(path: Path, what: str) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{what} {path}:{where} is not valid YAML") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {path}: cannot be read ({type(exc).__name__})") from None


def read_yaml(
    path: str | Path, *, what: str = "config file", _seen: tuple[Path, ...] = ()
) -> dict[str, Any]:
    """A YAML mapping file with its ``extends`` chain resolved (``what`` names the kind of
    file in messages: ``config file``, ``grid file``). Raises ConfigError."""
    path = Path(path)
    if path.resolve() in _seen:
        raise ConfigError(f"{what} {path}: 'extends' forms a cycle")
    if not path.is_file():
        raise ConfigError(f"{what} {path}: not found")
    raw = _load_text(path, what)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} {path}: expected a mapping at the top level")
    parents = raw.pop("extends", None)
    if parents is None:
        return raw
    if isinstance(parents, str):
        parents = [parents]
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise ConfigError(f"{what} {path}: 'extends' expects a path or a list of paths")
    merged: dict[str, Any] = {}
    for parent in parents:
        merged = merge(merged, read_yaml(path.parent / parent, what=what,
                                         _seen=(*_seen, path.resolve())))
    return merge(merged, raw)


def parse_overrides(overrides: Sequence[str]) -> list[tuple[list[str], Any]]:
    """Parse ``["optim.lr=0.1", "task.loss=cosine"]`` into ``[(["optim", "lr"], 0.1), ...]``.

    Values are read as YAML, so ``true``, ``null``, ``[60, 75]`` and numbers get their
    types; quote a value to keep it a string (``name='007'``).
    """
    parsed = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE (e.g. optim.lr=0.1)")
        key, text = item.split("=", 1)
        key = key.strip()
        if not key or any(not p for p in key.split(".")):
            raise ConfigError(f"override {item!r}: expected a dotted key such as optim.lr")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        parsed.append((key.split("."), value))
    return parsed


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of ``raw`` with each dotted ``key=value`` of ``overrides`` set, in order;
    missing sections are created."""
    out = copy.deepcopy(dict(raw))
    for keys, value in parse_overrides(overrides):
        node = out
        for i, k in enumerate(keys[:-1]):
            nxt = node.get(k)
            if nxt is None:
                nxt = node[k] = {}
            elif not isinstance(nxt, dict):
                raise ConfigError(
                    f"override '{'.'.join(keys)}': '{'.'.join(keys[: i + 1])}' is not a section"
                )
            node = nxt
        node[keys[-1]] = value
    return out
