"""Tests of supkd.analysis.layerwise: the stage x stage CKA of two models on the same inputs."""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from supkd.analysis.cka import MinibatchCKA, linear_cka
from supkd.analysis.layerwise import layerwise_cka, layerwise_cka_many, per_stage_summary
from supkd.models import create_model


def _batches(n: int, m: int = 8, seed: int = 0, size: int = 16) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(m, 3, size, size, generator=g) for _ in range(n)]


class Recorder(nn.Module):
    """Tiny model with ``forward_intermediates`` that records the modes it was called in.

    Its "feat" stage is a fixed linear map of the input; "drop" applies dropout, which only
    acts in training mode, so eval mode is visible in the result.
    """

    def __init__(self, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.lin = nn.Linear(3 * 16 * 16, 12)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(12, 3 * 16 * 16, generator=g) / 30)
        self.drop = nn.Dropout(0.5)
        self.calls: list[tuple[bool, bool]] = []

    def forward_intermediates(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.calls.append((self.training, torch.is_grad_enabled()))
        h = self.lin(x.flatten(1))
        return {"conv": x, "feat": h, "drop": self.drop(h)}


def test_matches_minibatch_cka_on_forward_intermediates_by_hand() -> None:
    torch.manual_seed(0)
    teacher = create_model("resnet18", width=4)
    student = create_model("resnet18", width=2)
    teacher.train()  # layerwise must switch to eval and back
    batches = _batches(3)
    res = layerwise_cka(teacher, student, batches)
    assert teacher.training and student.training  # flags restored (both were training)
    teacher.eval()
    student.eval()
    ref = MinibatchCKA(7, 7)
    with torch.no_grad():
        for x in batches:
            ref.update(teacher.forward_intermediates(x), student.forward_intermediates(x))
    names = ["stem", "layer1", "layer2", "layer3", "layer4", "embedding", "logits"]
    assert res.stages_a == names and res.stages_b == names
    torch.testing.assert_close(res.matrix, ref.compute(), rtol=0, atol=1e-12)
    assert res.diagonal == {s: float(res.matrix[i, i]) for i, s in enumerate(names)}
    for v in res.sanity.values():
        assert v == pytest.approx(1.0, abs=1e-9)
    assert res.num_samples == 24 and res.num_batches == 3 and res.skipped_samples == 0


def test_teacher_against_itself_is_the_self_matrix() -> None:
    torch.manual_seed(1)
    teacher = create_model("resnet18", width=4)
    res = layerwise_cka(teacher, teacher, _batches(2, seed=3))
    torch.testing.assert_close(res.matrix, res.self_matrix, rtol=0, atol=1e-12)
    for v in res.diagonal.values():
        assert v == pytest.approx(1.0, abs=1e-9)
    d = res.to_dict()
    assert d["sanity"] == res.sanity and len(d["matrix"]) == 7 and len(d["self_matrix"][0]) == 7


def test_eval_mode_no_grad_and_flags_restored() -> None:
    a, b = Recorder(0), Recorder(1)
    a.train()
    b.eval()
    batches = _batches(2)
    res = layerwise_cka(a, b, batches)
    assert a.calls == [(False, False)] * 2 and b.calls == [(False, False)] * 2
    assert a.training and not b.training
    # Eval mode: dropout is the identity, so "drop" and "feat" are the same representation.
    i_feat, i_drop = res.stages_a.index("feat"), res.stages_b.index("drop")
    assert float(res.self_matrix[i_feat, i_drop]) == pytest.approx(1.0, abs=1e-12)
    # Single-batch check of one entry against the debiased linear CKA (float64 throughout,
    # where the streaming path forms float32 Grams: agreement to float32 rounding).
    one = layerwise_cka(a, b, batches[:1])
    with torch.no_grad():
        xa = a.lin(batches[0].flatten(1))
        xb = b.lin(batches[0].flatten(1))
    assert float(one.matrix[i_feat, one.stages_b.index("feat")]) == pytest.approx(
        linear_cka(xa, xb, debiased=True), abs=1e-6
    )


def test_loader_item_kinds_max_batches_and_tiny_last_batch() -> None:
    a, b = Recorder(0), Recorder(1)
    xs = _batches(4)
    tuples = [(x, torch.zeros(x.shape[0], dtype=torch.long)) for x in xs]
    objs = [SimpleNamespace(x=x, y=None) for x in xs]
    ref = layerwise_cka(a, b, xs)
    torch.testing.assert_close(layerwise_cka(a, b, tuples).matrix, ref.matrix, rtol=0, atol=0)
    torch.testing.assert_close(layerwise_cka(a, b, objs).matrix, ref.matrix, rtol=0, atol=0)
    two = layerwise_cka(a, b, iter(xs), max_batches=2)
    assert two.num_batches == 2
    torch.testing.assert_close(two.matrix, layerwise_cka(a, b, xs[:2]).matrix, rtol=0, atol=0)
    with pytest.warns(RuntimeWarning, match="skipped 3 images"):
        tail = layerwise_cka(a, b, [*xs, xs[0][:3]])
    assert tail.skipped_samples == 3 and tail.num_samples == 32
    torch.testing.assert_close(tail.matrix, ref.matrix, rtol=0, atol=0)


def test_stage_selection_and_pool() -> None:
    torch.manual_seed(2)
    t, s = create_model("resnet18", width=4), create_model("resnet18", width=2)
    batches = _batches(2)
    res = layerwise_cka(t, s, batches, stages=["layer2", "layer4"], pool=True)
    assert res.stages_a == ["layer2", "layer4"] and res.pool
    full = layerwise_cka(t, s, batches, pool=True)
    torch.testing.assert_close(res.matrix, full.matrix[[2, 4]][:, [2, 4]], rtol=0, atol=1e-12)
    flat = layerwise_cka(t, s, batches, stages=["layer2"])
    assert abs(float(flat.matrix[0, 0]) - float(res.matrix[0, 0])) > 1e-3


def test_bad_input_raises() -> None:
    a, b = Recorder(0), Recorder(1)
    with pytest.raises(ValueError, match=r"no stage\(s\) \['layer9'\]; available"):
        layerwise_cka(a, b, _batches(1), stages=["layer9"])
    with pytest.raises(ValueError, match="no batch of at least 4"):
        layerwise_cka(a, b, [torch.randn(3, 3, 16, 16)])
    with pytest.raises(ValueError, match="forward_intermediates"):
        layerwise_cka(nn.Linear(2, 2), b, _batches(1))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        layerwise_cka(a, b, [torch.randn(8, 2, 3, 16, 16)])
    with pytest.raises(ValueError, match="max_batches"):
        layerwise_cka(a, b, _batches(1), max_batches=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layerwise_cka(a, b, _batches(1))  # a clean run warns about nothing


def test_many_students_in_one_pass_equal_separate_runs() -> None:
    a, b, c = Recorder(0), Recorder(1), Recorder(2)
    batches = _batches(2)
    many = layerwise_cka_many(a, {"b": b, "c": c, "self": a}, batches)
    assert list(many) == ["b", "c", "self"]
    assert len(a.calls) == 2  # the teacher ran once per batch, also for "self"
    for key, model in (("b", b), ("c", c)):
        one = layerwise_cka(a, model, batches)
        torch.testing.assert_close(many[key].matrix, one.matrix, rtol=0, atol=1e-12)
        torch.testing.assert_close(many[key].self_matrix, one.self_matrix, rtol=0, atol=1e-12)
    torch.testing.assert_close(many["self"].matrix, many["self"].self_matrix, rtol=0, atol=0)


def test_per_stage_summary_groups_methods() -> None:
    a = Recorder(0)
    runs = [
        ("m1", layerwise_cka(a, Recorder(1), _batches(1))),
        ("m1", layerwise_cka(a, Recorder(2), _batches(1))),
        ("m2", layerwise_cka(a, Recorder(3), _batches(1))),
    ]
    stages, series = per_stage_summary(runs)
    assert stages == ["conv", "feat", "drop"]
    vals = [runs[0][1].diagonal["feat"], runs[1][1].diagonal["feat"]]
    assert series["m1"]["n"] == 2 and series["m2"]["n"] == 1
    assert series["m1"]["mean"][1] == pytest.approx(sum(vals) / 2, abs=1e-12)
    assert series["m1"]["std"][1] == pytest.approx(abs(vals[0] - vals[1]) / 2**0.5, abs=1e-12)
    assert series["m1"]["mean"][0] == pytest.approx(1.0, abs=1e-9)  # same input stage
    assert math.isnan(series["m2"]["std"][0])
    with pytest.raises(ValueError, match="at least one run"):
        per_stage_summary([])
