"""``.. supkd-models::``: the names ``create_model`` accepts, from the model registry.

Exact names (``@register_model``) with their builder, its keyword arguments and the first
line of its docstring; then the families (``@register_model_family``, e.g. ``timm/<arch>``).
"""

from __future__ import annotations

import inspect

from docutils import nodes
from sphinx.util.docutils import SphinxDirective

from supkd_docs.nodes_util import code, para, section, table


def _first_line(obj: object) -> str:
    doc = inspect.getdoc(obj) or ""
    return " ".join(doc.split("\n\n")[0].split())


def _kwargs(fn: object) -> str:
    try:
        params = inspect.signature(fn).parameters  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""
    return ", ".join(
        name if p.default is inspect.Parameter.empty else f"{name}={p.default!r}"
        for name, p in list(params.items())[1:]  # the first parameter is the name itself
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    )


def _builder(fn: object) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


class ModelsDirective(SphinxDirective):
    """Tables of the registered model names and families."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        self.env.note_reread()  # generated from the code: never cached
        from supkd.models import MODEL_FAMILIES, MODELS, list_models

        names = section(self.state.document, "Registered names", key="models-names")
        names += table(
            ["name", "builder", "what it builds"],
            [[code(n), code(_builder(MODELS[n])), para(_first_line(MODELS[n]))]
             for n in list_models()],
            widths=[16, 34, 50], classes=["supkd-models"])
        by_builder: dict[str, list[str]] = {}
        for n in list_models():
            by_builder.setdefault(_builder(MODELS[n]), []).append(n)
        args = section(self.state.document, "Builder arguments", key="models-arguments")
        args += table(
            ["builder", "names", "keyword arguments of create_model (defaults)"],
            [[code(b), ", ".join(ns), code(_kwargs(MODELS[ns[0]]) or "-")]
             for b, ns in by_builder.items()],
            widths=[30, 25, 45])
        families = section(self.state.document, "Families", key="models-families")
        families += table(
            ["names", "builder", "what it builds", "keyword arguments (defaults)"],
            [[code(f"{p}/<name>"), code(_builder(fn)), para(_first_line(fn)),
              code(_kwargs(fn) or "-")] for p, fn in MODEL_FAMILIES.items()],
            widths=[14, 26, 30, 30])
        return [names, args, families]


class DatasetsDirective(SphinxDirective):
    """The data sets ``data.name`` accepts, from ``supkd.data.DATASETS``."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        self.env.note_reread()  # generated from the code: never cached
        from supkd.data import DATASETS

        return [table(
            ["data.name", "image side", "channels", "style", "loader"],
            [[code(name), str(spec.native_size), str(spec.channels), spec.style,
              para(_first_line(spec.load) or _builder(spec.load))]
             for name, spec in DATASETS.items()],
            widths=[16, 10, 10, 10, 54], classes=["supkd-datasets"])]
