"""The one YAML reader of supkd (run configs and grid specs), its merge rule and overrides.

- :func:`read_yaml`: a file as a dict, with ``extends: other.yaml`` (a path relative to the
  file, or a list of them, merged in order) resolved; the result has no ``extends`` left.
- :func:`merge`: the one merge rule. Mappings merge key by key, at every depth (``meta``
  included: a grid entry adds keys to the grid's ``meta``); any other value (a list, a
  number, ``null``) replaces what was there.
- :func:`parse_overrides` / :func:`apply_overrides`: dotted ``key=value`` strings
  (``optim.lr=0.1``), the values read as YAML; ``~key`` (Hydra's spelling) removes a key,
  and ``key=null`` sets it to null, which the typed loader reads as the field's default
  (:func:`supkd.config.typed.build_section`) unless the field takes null itself.

Every YAML text goes through :class:`StrictLoader`, PyYAML's ``SafeLoader`` with two
refusals: a key given twice in one mapping (YAML 1.2 forbids it; PyYAML silently keeps the
last one, so ``lr: 0.1`` a few lines above ``lr: 0.5`` would be ignored unseen), and an
alias inside the node it names (``a: &x [*x]``: a structure that contains itself, on which
every later walk of the config recurses forever).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from supkd.errors import ConfigError

__all__ = ["REMOVE", "StrictLoader", "apply_overrides", "load_yaml_text", "merge",
           "parse_overrides", "read_yaml"]

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Remove:
    """The value :func:`parse_overrides` gives a ``~key`` override (one instance)."""

    def __repr__(self) -> str:
        return "REMOVE"


#: What :func:`parse_overrides` returns as the value of ``~key``: remove the key.
REMOVE = _Remove()


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate keys and recursive aliases (module
    docstring); both are ``yaml.MarkedYAMLError`` s with the line of the offending node."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._open_anchors: set[str] = set()  # anchors of the nodes being composed

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            if event.anchor in self._open_anchors:
                raise yaml.composer.ComposerError(
                    None, None,
                    f"the alias *{event.anchor} is inside the node &{event.anchor} it refers "
                    "to (a recursive structure)", event.start_mark)
            return super().compose_node(parent, index)
        anchor = getattr(self.peek_event(), "anchor", None)
        if anchor is not None:
            self._open_anchors.add(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            if anchor is not None:
                self._open_anchors.discard(anchor)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:  # "<<: *base" merges may override on purpose
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    seen = first.get(key)
                except TypeError:  # an unhashable key: PyYAML reports it itself
                    continue
                if seen is not None:
                    raise yaml.constructor.ConstructorError(
                        None, None,
                        f"the key {key!r} is given twice (first on line {seen + 1}); YAML "
                        "allows a key once per mapping", key_node.start_mark)
                first[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(exc: yaml.YAMLError, text: str) -> str:
    """``line N: what is wrong`` for a YAML error, one line; a tab is explained."""
    mark = getattr(exc, "problem_mark", None)
    where = f" line {mark.line + 1}" if mark is not None else ""
    problem = str(getattr(exc, "problem", None) or "").replace("\n", " ").strip()
    lines = text.splitlines()
    line = lines[mark.line] if mark is not None and mark.line < len(lines) else ""
    if "\t" in problem or "'\\t'" in problem or "\t" in line[: (mark.column + 1) if mark else 0]:
        problem = ("a tab character: YAML indents with spaces only (tabs are not allowed "
                   "in indentation)")
    return f"{where}: {problem}" if problem else where


def load_yaml_text(text: str) -> Any:
    """``yaml.load`` of ``text`` with :class:`StrictLoader` (raises ``yaml.YAMLError``)."""
    return yaml.load(text, Loader=StrictLoader)


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
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {path}: cannot be read ({type(exc).__name__})") from None
    try:
        return load_yaml_text(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path}:{_yaml_problem(exc, text)} (not valid YAML)") from None


def read_yaml(
    path: str | Path, *, what: str = "config file", _seen: tuple[Path, ...] = ()
) -> dict[str, Any]:
    """A YAML mapping file with its ``extends`` chain resolved (``what`` names the kind of
    file in messages: ``config file``, ``grid file``). Raises ConfigError."""
    path = Path(path)
    if path.resolve() in _seen:
        raise ConfigError(f"{what} {path}: 'extends' forms a cycle")
    if path.is_dir():
        raise ConfigError(f"{what} {path}: is a folder, expected a YAML file")
    if not path.is_file():
        raise ConfigError(f"{what} {path}: not found")
    raw = _load_text(path, what)
    if raw is None:
        # An empty file (or one of comments only) would silently be a run of defaults.
        raise ConfigError(f"{what} {path}: is empty, expected a YAML mapping "
                          "(e.g. data: {name: cifar10})")
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
    types; quote a value to keep it a string (``name='007'``). ``~model.width`` gives
    ``(["model", "width"], REMOVE)``: remove the key.
    """
    parsed: list[tuple[list[str], Any]] = []
    for item in overrides:
        if item.startswith("~"):
            key = item[1:].strip()
            if "=" in key or not key or any(not p for p in key.split(".")):
                raise ConfigError(f"override {item!r}: expected ~KEY, a dotted key to remove "
                                  "(e.g. ~model.width), with no value")
            parsed.append((key.split("."), REMOVE))
            continue
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE (e.g. optim.lr=0.1), "
                              "or ~KEY to remove a key; got no '='")
        key, text = item.split("=", 1)
        key = key.strip()
        if not key or any(not p for p in key.split(".")):
            raise ConfigError(f"override {item!r}: expected a dotted key such as optim.lr")
        try:
            value = load_yaml_text(text) if text.strip() else ""
        except yaml.constructor.ConstructorError as exc:  # a duplicate key in {a: 1, a: 2}
            raise ConfigError(f"override {item!r}:{_yaml_problem(exc, text)}") from None
        except yaml.YAMLError:
            value = text
        parsed.append((key.split("."), value))
    return parsed


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of ``raw`` with each dotted ``key=value`` of ``overrides`` set, in order;
    missing sections are created. ``~key`` removes the key (ConfigError when it is not
    there: a misspelt key would otherwise be a silent no-op)."""
    out = copy.deepcopy(dict(raw))
    for keys, value in parse_overrides(overrides):
        if value is REMOVE:
            _remove(out, keys)
            continue
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


def _remove(raw: dict[str, Any], keys: list[str]) -> None:
    """Remove the dotted key ``keys`` from ``raw`` (the ``~key`` override)."""
    node: Any = raw
    for k in keys[:-1]:
        node = node.get(k) if isinstance(node, dict) else None
    dotted = ".".join(keys)
    if not isinstance(node, dict) or keys[-1] not in node:
        have = sorted(map(str, node)) if isinstance(node, dict) else []
        where = f"; keys there: {', '.join(have)}" if have else ""
        raise ConfigError(f"override '~{dotted}': the config has no key '{dotted}' to "
                          f"remove{where}")
    del node[keys[-1]]
