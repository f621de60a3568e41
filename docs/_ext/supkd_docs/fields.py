"""What the config page says about a field, read from the dataclass definitions.

For each field of a :class:`supkd.config.Section` dataclass: its type (the annotation), its
default, its bound (``bounded(...)`` metadata, or the choices of a ``Literal``) and one line
of meaning, taken from the first of

1. ``metadata={"doc": ...}`` on the field;
2. the class docstring's bullet ``- ``field``: text`` (its first sentence);
3. the comment lines directly above the field, or the comment at the end of its line;
4. the same field of a base class (a task section's ``name``).

A field with none of these has no meaning; the page then warns, which fails the ``-W``
build: a new field is documented where it is defined, or the build says which one lacks it.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import re
import textwrap
import tokenize
import types
import typing
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

_BULLET = re.compile(r"^\s*- ``(\w+)``: ?(.*)$")
_SENTENCE_END = re.compile(r"(?<!e\.g)(?<!i\.e)(?<!etc)\.(?=\s+[A-Z(`])")


@dataclass(frozen=True)
class FieldDoc:
    name: str
    type: str
    default: str
    bound: str
    meaning: str
    section: type | None  # the nested section class, for a field that is a section


def first_sentence(text: str) -> str:
    text = " ".join(text.split())
    match = _SENTENCE_END.search(text)
    return text[: match.start() + 1] if match else text


def type_text(tp: Any) -> str:
    """An annotation as users write it in YAML terms (``int | None``, ``list[float]``)."""
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "null"
    if tp is Any:
        return "any"
    if origin is Literal:
        return "choice"
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_text(a) for a in typing.get_args(tp))
    if origin is list:
        (inner,) = typing.get_args(tp) or (Any,)
        return f"list[{type_text(inner)}]"
    if origin is dict or tp is dict:
        return "mapping"
    if dataclasses.is_dataclass(tp):
        return "section"
    return getattr(tp, "__name__", str(tp))


def _choices(tp: Any) -> list[Any]:
    if typing.get_origin(tp) is Literal:
        return list(typing.get_args(tp))
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [c for arg in typing.get_args(tp) for c in _choices(arg)]
    return []


def bound_text(f: dataclasses.Field, tp: Any) -> str:
    parts = []
    choices = _choices(tp)
    if choices:
        parts.append("one of " + ", ".join(str(c) for c in choices))
    bounds = f.metadata.get("bounds", {})
    signs = {"gt": ">", "ge": "≥", "lt": "<", "le": "≤"}
    limits = [f"{signs[k]} {bounds[k]:g}" for k in signs if k in bounds]
    if limits:
        parts.append(("each " if bounds.get("each") else "") + ", ".join(limits))
    if bounds.get("finite") is False:
        parts.append("inf allowed")
    return "; ".join(parts)


def default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    if dataclasses.is_dataclass(value):
        return "(section)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, str) else str(value)


@cache
def _source_comments(cls: type) -> dict[str, str]:
    """Field name -> its comment (lines above, else end of line) in ``cls``'s source."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    comments: dict[int, str] = {}
    code_lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
                              tokenize.DEDENT, tokenize.ENDMARKER):
            code_lines.add(tok.start[0])
    tree = ast.parse(source)
    found: dict[str, str] = {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    for node in body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above, line = [], node.lineno - 1
        while line in comments and line not in code_lines:
            above.insert(0, comments[line])
            line -= 1
        trailing = [comments[n] for n in range(node.lineno, (node.end_lineno or node.lineno) + 1)
                    if n in comments and n in code_lines]
        text = " ".join(above) or " ".join(trailing)
        if text:
            found[node.target.id] = text
    return found


@cache
def _docstring_bullets(cls: type) -> dict[str, str]:
    """Field name -> the text of its ``- ``name``: ...`` bullet in the class docstring."""
    doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
    found: dict[str, str] = {}
    name: str | None = None
    for line in doc.splitlines():
        match = _BULLET.match(line)
        if match:
            name = match.group(1)
            found[name] = match.group(2)
        elif name is not None and line.startswith("  ") and line.strip():
            found[name] += " " + line.strip()
        else:
            name = None
    return found


def meaning(cls: type, f: dataclasses.Field) -> str:
    """One line of meaning of field ``f`` of ``cls`` (empty when the code has none)."""
    if f.metadata.get("doc"):
        return first_sentence(str(f.metadata["doc"]))
    for klass in (k for k in cls.__mro__ if dataclasses.is_dataclass(k)):
        if f.name not in {x.name for x in dataclasses.fields(klass)}:
            continue
        bullet = _docstring_bullets(klass).get(f.name)
        if bullet:
            return first_sentence(bullet)
        comment = _source_comments(klass).get(f.name)
        if comment:
            return first_sentence(comment)
    return ""


def field_docs(cls: type) -> list[FieldDoc]:
    """The documented fields of section class ``cls``, in definition order."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        sub = tp if dataclasses.is_dataclass(tp) else None
        out.append(FieldDoc(f.name, type_text(tp), default_text(f), bound_text(f, tp),
                            meaning(cls, f), sub))
    return out
