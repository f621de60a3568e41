"""CKA figures: a stage × stage heatmap and the paper's Fig. 2 (CKA per stage, one series per
method, error bars over seeds).

Figures are drawn on matplotlib's Agg canvas through the object API (``Figure`` +
``FigureCanvasAgg``), so nothing touches pyplot's global state or needs a display, and are
written with :func:`supkd.utils.atomic.atomic_write_bytes` (a reader never sees half a PNG).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from supkd.utils.atomic import atomic_write_bytes

__all__ = ["plot_cka_heatmap", "plot_cka_per_stage", "save_figure"]


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 150) -> Path:
    """Render ``fig`` with Agg and write it atomically; the format follows the suffix."""
    path = Path(path)
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fmt = path.suffix.lstrip(".").lower() or "png"
    fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())


def plot_cka_heatmap(
    matrix: Sequence[Sequence[float]],
    stages_a: Sequence[str],
    stages_b: Sequence[str],
    path: str | os.PathLike[str],
    *,
    label_a: str = "teacher",
    label_b: str = "student",
    title: str | None = None,
    annotate: bool = True,
) -> Path:
    """Heatmap of a CKA matrix (len(stages_a), len(stages_b)), rows = model A's stages.

    Colour scale fixed to [0, 1] so that figures are comparable; each cell carries its value.
    """
    rows, cols = len(stages_a), len(stages_b)
    data = [[float(v) for v in row] for row in matrix]
    if len(data) != rows or any(len(r) != cols for r in data):
        raise ValueError(f"matrix shape does not match the stage names ({rows} x {cols})")
    fig = Figure(figsize=(1.0 + 0.85 * cols + 1.6, 1.0 + 0.6 * rows + 0.8))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(data, vmin=0.0, vmax=1.0, cmap="magma", aspect="auto", origin="upper")
    ax.set_xticks(range(cols))
    ax.set_xticklabels(list(stages_b), rotation=45, ha="right")
    ax.set_yticks(range(rows))
    ax.set_yticklabels(list(stages_a))
    ax.set_xlabel(f"{label_b} stage")
    ax.set_ylabel(f"{label_a} stage")
    if title:
        ax.set_title(title)
    cbar = fig.colorbar(im, ax=ax)
    cbar.set_label("linear CKA")
    if annotate:
        for i, row in enumerate(data):
            for j, v in enumerate(row):
                text = "nan" if math.isnan(v) else f"{v:.2f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="black" if (not math.isnan(v) and v > 0.6) else "white")
    return save_figure(fig, path)


def plot_cka_per_stage(
    stages: Sequence[str],
    series: Mapping[str, Mapping[str, Any]],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    ylabel: str = "CKA (teacher vs student, same stage)",
    xlabel: str = "stage",
) -> Path:
    """Fig. 2 style: CKA per stage (x), one line per method, mean ± std error bars.

    ``series[method]`` has ``"mean"`` (len(stages) floats), optional ``"std"`` (same length,
    sample std over seeds; NaN or absent draws no bar) and optional ``"n"`` (int, runs per
    method, shown in the legend). Across architectures ``stages`` label the pairs matched by
    relative depth (``"blocks.4 ~ layer1"``, :func:`supkd.analysis.layerwise.stage_labels`)
    and ``xlabel`` says so.
    """
    if not series:
        raise ValueError("plot_cka_per_stage needs at least one series")
    k = len(stages)
    fig = Figure(figsize=(max(5.0, 1.0 + 0.9 * k), 4.0))
    ax = fig.add_subplot(1, 1, 1)
    xs = list(range(k))
    n_series = len(series)
    # Small horizontal offsets keep overlapping error bars readable.
    width = 0.25 if n_series > 1 else 0.0
    lowest = 0.0
    for s_idx, (method, vals) in enumerate(series.items()):
        mean = [float(v) for v in vals["mean"]]
        if len(mean) != k:
            raise ValueError(f"series {method!r} has {len(mean)} values for {k} stages")
        std_raw = vals.get("std")
        std = None
        if std_raw is not None:
            std = [0.0 if math.isnan(float(v)) else float(v) for v in std_raw]
            if len(std) != k:
                raise ValueError(f"series {method!r} has {len(std)} std values for {k} stages")
        finite = [m - (std[i] if std else 0.0) for i, m in enumerate(mean) if not math.isnan(m)]
        lowest = min([lowest, *finite])
        shift = (s_idx - (n_series - 1) / 2) * width / max(n_series - 1, 1)
        n = vals.get("n")
        label = f"{method} (n={int(n)})" if n else method
        ax.errorbar([x + shift for x in xs], mean, yerr=std, marker="o", capsize=3,
                    linewidth=1.5, label=label)
    ax.set_xticks(xs)
    ax.set_xticklabels(list(stages), rotation=30, ha="right")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    # Unbiased CKA estimates can dip slightly below 0 for unrelated stages: keep them visible.
    ax.set_ylim(min(0.0, lowest - 0.05), 1.05)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(title="method (runs)", fontsize=8)
    if title:
        ax.set_title(title)
    return save_figure(fig, path)
