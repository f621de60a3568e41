"""A supkd run directory (or its ``model.pt`` / ``last.pt``) as an import source."""

from __future__ import annotations

from pathlib import Path

from supkd.importers.common import ImportedTeacher, Layout, check_request
from supkd.models.files import load_model_record


def import_run(
    source: str | Path, *, arch: str | None = None, stem: str | None = None
) -> ImportedTeacher:
    """Load a supkd run directory, ``model.pt`` or ``last.pt`` through the engine."""
    rec = load_model_record(source)
    net = rec.model
    spec = dict(net.spec)
    layout = Layout(
        arch=str(spec["name"]),
        # timm models (timm/<arch>) have no stem or width: only a ResNet request names them.
        stem=str(spec.get("stem", "")),
        width=int(spec.get("width", 0)),
        in_channels=int(spec["in_channels"]),
    )
    check_request(layout, arch, stem, str(source))
    net.eval()
    parts = rec.trained_parts
    return ImportedTeacher(
        model=net,
        format="run",
        arch=layout.arch,
        stem=layout.stem,
        num_classes=int(spec["num_classes"]),
        has_classifier="classifier" in parts,
        has_head=net.head is not None and "head" in parts,
        sources=[str(rec.path)],
    )
