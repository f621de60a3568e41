"""Tests of supkd.analysis.plots: the CKA heatmap and the Fig. 2 per-stage plot."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.image as mpimg
import pytest

from supkd.analysis.plots import plot_cka_heatmap, plot_cka_per_stage

STAGES = ["stem", "layer1", "layer2", "layer3", "layer4", "embedding", "logits"]


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_heatmap_writes_a_png_and_no_temp_file(tmp_path: Path) -> None:
    matrix = [[1.0 - abs(i - j) / 7 for j in range(7)] for i in range(3)]
    out = plot_cka_heatmap(matrix, STAGES[:3], STAGES, tmp_path / "sub" / "h.png", title="t")
    assert out == tmp_path / "sub" / "h.png" and _is_png(out)
    img = mpimg.imread(out)
    assert img.shape[0] > 200 and img.shape[1] > 400  # readable size, wider than tall
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["h.png"]


def test_heatmap_accepts_nan_and_rejects_bad_shape(tmp_path: Path) -> None:
    plot_cka_heatmap([[math.nan, 0.5], [0.2, 1.0]], ["a", "b"], ["c", "d"], tmp_path / "n.png")
    with pytest.raises(ValueError, match="shape"):
        plot_cka_heatmap([[0.1, 0.2]], ["a", "b"], ["c", "d"], tmp_path / "bad.png")


def test_per_stage_plot_with_error_bars(tmp_path: Path) -> None:
    series = {
        "supcon_kd": {"mean": [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3], "std": [0.01] * 7, "n": 5},
        "logit_mse": {"mean": [0.8, 0.7, 0.6, 0.5, 0.4, 0.3, -0.02], "std": [math.nan] * 7},
        "single": {"mean": [0.5] * 7},
    }
    out = plot_cka_per_stage(STAGES, series, tmp_path / "fig2.png", title="Fig. 2")
    assert _is_png(out)
    with pytest.raises(ValueError, match="7 stages"):
        plot_cka_per_stage(STAGES, {"x": {"mean": [0.1]}}, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="at least one series"):
        plot_cka_per_stage(STAGES, {}, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
