"""``.. supkd-losses::``: the loss page, generated from ``supkd.losses.LOSSES``.

One summary table (name, row label, equation, one line, arguments with defaults), then one
section per loss: its metadata (equation, reference, what the distill task must give it,
source file) and an argument table read from its constructor, followed by its docstring
(through autodoc, so the formula and the argument descriptions are the code's own).
"""

from __future__ import annotations

import inspect
from pathlib import Path

from docutils import nodes
from docutils.statemachine import StringList
from sphinx import addnodes
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

from supkd_docs.nodes_util import code, para, section, table

#: Class attributes of a KD loss that tell the distill task what to do, and how they read.
PROPERTIES = {
    "needs_labels": "needs the batch's labels",
    "compares_samples": "couples the samples of a batch (under DDP: the gathered batch)",
    "needs_index": "keeps per-sample state (gets each sample's training-split index)",
    "flatten_inputs": "takes (B, ...) inputs of any rank, flattened per sample",
    "kd_table_row": "a row of the paper's KD tables (II, IV)",
}


def _arguments(cls: type) -> list[tuple[str, str, str]]:
    """(name, annotation, default) of the constructor's keyword-able parameters."""
    from supkd.losses import loss_arguments

    params = inspect.signature(cls.__init__).parameters
    rows = []
    for name, default in loss_arguments(cls).items():
        ann = params[name].annotation
        shown = "" if ann is inspect.Parameter.empty else (
            ann if isinstance(ann, str) else getattr(ann, "__name__", str(ann)))
        rows.append((name, str(shown), "required" if default is inspect.Parameter.empty
                     else repr(default)))
    return rows


def _source(cls: type) -> str:
    """Where the class is defined: the path inside the supkd package, else the file."""
    import supkd

    try:
        path = Path(inspect.getsourcefile(cls) or "")
    except TypeError:
        return cls.__module__
    root = Path(supkd.__file__).resolve().parent.parent
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return path.name or cls.__module__


def _args_text(cls: type) -> str:
    return ", ".join(f"{n}={d}" for n, _, d in _arguments(cls)) or "none"


class LossesDirective(SphinxDirective):
    """Summary table and one section per registered loss."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        self.env.note_reread()  # generated from the code: never cached
        from supkd.losses import LOSSES, SupConLoss, loss_label

        summary_rows = [
            [code(name), loss_label(name), cls.paper_eq or "-", cls.summary or "-",
             _args_text(cls)]
            for name, cls in LOSSES.items()
        ]
        summary_rows.append([code("SupConLoss"), "SupCon pre-training (not a KD loss)",
                             "Khosla et al. 2020", "teacher pre-training (SimCLR without labels)",
                             _args_text(SupConLoss)])
        out: list[nodes.Node] = [table(
            ["name", "label", "paper / equation", "what it does", "arguments (defaults)"],
            summary_rows, widths=[14, 18, 14, 30, 24], classes=["supkd-losses"])]
        for name, cls in LOSSES.items():
            out.append(self._loss_section(name, cls))
        out.append(self._loss_section("SupConLoss", SupConLoss, pretrain=True))
        return out

    def _loss_section(self, name: str, cls: type, pretrain: bool = False) -> nodes.section:
        sec = section(self.state.document,
                      name, literal=True, key=f"loss-{name}")
        facts = [
            ("class", f"``{cls.__module__}.{cls.__qualname__}``"),
            ("source", f"``{_source(cls)}``"),
        ]
        if not pretrain:
            facts[:0] = [("label", getattr(cls, "label", "") or name),
                         ("equation", getattr(cls, "paper_eq", "") or "-"),
                         ("reference", getattr(cls, "reference", "") or "-")]
            props = [text for attr, text in PROPERTIES.items() if getattr(cls, attr, False)]
            if not getattr(cls, "same_width", True):
                props.append("student and teacher widths may differ")
            facts.append(("properties", "; ".join(props) or "none"))
        sec += table(None, [[k, para(v)] for k, v in facts], widths=[12, 88],
                     classes=["supkd-loss-facts"])
        args = _arguments(cls)
        if args:
            sec += table(["argument", "type", "default"],
                         [[code(n), t or "-", code(d)] for n, t, d in args],
                         widths=[30, 30, 40], classes=["supkd-loss-args"])
        sec += self._autodoc(cls)
        return sec

    def _autodoc(self, cls: type) -> list[nodes.Node]:
        text = StringList([f".. autoclass:: {cls.__module__}.{cls.__qualname__}",
                           "   :no-index:", ""], source=self.get_source_info()[0])
        holder = nodes.container(classes=["supkd-loss-doc"])
        nested_parse_with_titles(self.state, text, holder)
        # viewcode would link the source page back to this un-indexed copy (it has no
        # anchor); the back-link belongs to the API reference's entry.
        for sig in holder.findall(addnodes.desc_signature):
            sig["module"] = ""
        return [holder]


