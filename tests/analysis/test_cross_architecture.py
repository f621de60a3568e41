"""Layer-wise CKA across architectures: Fig. 2's stage pairs by relative depth."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from supkd.analysis.layerwise import layerwise_cka, match_stages, stage_labels

RESNET = ["stem", "layer1", "layer2", "layer3", "layer4", "embedding", "logits"]


def _vit(depth: int) -> list[str]:
    return [f"blocks.{i}" for i in range(depth)] + ["embedding", "logits"]


def test_the_same_names_pair_by_name():
    assert match_stages(RESNET, RESNET) == [(s, s) for s in RESNET]
    # A timm ResNet shares layer1..layer4 with supkd's: those pair by name, its act1 stem
    # (no counterpart by name) is left out.
    timm_resnet = ["act1", "layer1", "layer2", "layer3", "layer4", "embedding", "logits"]
    assert match_stages(timm_resnet, RESNET) == [(s, s) for s in RESNET[1:]]


BLOCKS_12 = ["blocks.1", "blocks.4", "blocks.6", "blocks.9", "blocks.11"]
CONVNEXT = ["stages.0", "stages.1", "stages.2", "stages.3", "embedding", "logits"]


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        # 12 blocks vs 5 stages: block floor(12k/5 + 1/2) (1-based) for k = 1..5.
        (_vit(12), RESNET, list(zip(BLOCKS_12, RESNET[:5]))),
        # 5 ResNet stages as the teacher, 12 blocks as the student: the same pairs, by A.
        (RESNET, _vit(12), list(zip(RESNET[:5], BLOCKS_12))),
        # 4 ConvNeXt stages vs 5 ResNet stages: the shorter list (4) picks from the longer.
        (CONVNEXT, RESNET, list(zip(CONVNEXT[:4], ["stem", "layer2", "layer3", "layer4"]))),
        # equal lengths: one to one in order.
        (_vit(5), RESNET, list(zip(_vit(5)[:5], RESNET[:5]))),
    ],
)
def test_different_names_pair_by_relative_depth(a, b, expected):
    assert match_stages(a, b) == [*expected, ("embedding", "embedding"), ("logits", "logits")]


class Stages(nn.Module):
    """A model with named stages of random projections of the input (and its logits)."""

    def __init__(self, names: list[str], seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.names = names
        self.maps = [torch.randn(48, 8, generator=g) for _ in names]

    def forward_intermediates(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        flat = x.flatten(1)
        out = {n: torch.tanh(flat @ m * (i + 1)) for i, (n, m) in enumerate(zip(self.names,
                                                                               self.maps))}
        out["embedding"], out["logits"] = flat[:, :8], flat[:, :3]
        return out


def test_layerwise_cka_diagonal_reads_the_matrix_at_the_pairs():
    vit, res = Stages(_vit(6)[:-2], 0), Stages(RESNET[:-2], 1)
    batches = [torch.randn(16, 3, 4, 4, generator=torch.Generator().manual_seed(i))
               for i in range(3)]
    out = layerwise_cka(vit, res, batches)
    assert out.matrix.shape == (8, 7)
    assert out.matched == dict(match_stages(out.stages_a, out.stages_b))
    for a, b in out.matched.items():
        assert out.diagonal[a] == pytest.approx(
            float(out.matrix[out.stages_a.index(a), out.stages_b.index(b)]))
    assert out.to_dict()["matched"] == out.matched
    assert stage_labels(list(out.diagonal), [out])[:2] == ["blocks.0 ~ stem", "blocks.1 ~ layer1"]
    assert stage_labels(["embedding"], [out]) == ["embedding"]
