"""Layer-wise CKA between two models on the same inputs (the paper's Fig. 2 analysis).

Both models are run in eval mode under ``torch.no_grad`` on each batch and their
``forward_intermediates(x)`` outputs (``stem, layer1..layer4, embedding, logits`` for
:class:`supkd.models.SupKDResNet`) are streamed into one :class:`MinibatchCKA`, so the result
is the unbiased minibatch CKA of Nguyen, Raghu & Kornblith (2021) over every image seen.

Model A (the teacher) is compared with model B (the student) and with itself: the
teacher-vs-teacher block is a sanity check (its diagonal must be 1; anything else means the
features or the estimator are broken) and shows how the teacher's own stages relate. Its Grams
are shared with the teacher-vs-student block, so it costs O(m²) per stage pair only.

Models of different architectures (a ViT teacher, a ResNet student) have different stage
names: the full stage × stage ``matrix`` compares every pair anyway, and the same-stage line of
Fig. 2 (``diagonal``) pairs the stages by relative depth (:func:`match_stages`).

Stage outputs are taken from ``forward_intermediates``, never from forward hooks: public
hook-based CKA code stores "the module's last output", which is overwritten per batch if not
consumed at once and keeps only one output of a module called twice.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from supkd.analysis.cka import MinibatchCKA
from supkd.analysis.stats import summarize

__all__ = [
    "OUTPUT_STAGES",
    "LayerwiseCKA",
    "layerwise_cka",
    "layerwise_cka_many",
    "match_stages",
    "per_stage_summary",
    "stage_labels",
]

#: Stages every supkd model ends with; they are always matched by name.
OUTPUT_STAGES = ("embedding", "logits")


def match_stages(stages_a: Sequence[str], stages_b: Sequence[str]) -> list[tuple[str, str]]:
    """The (A stage, B stage) pairs of Fig. 2's same-stage line, in A's order.

    ``embedding`` and ``logits`` pair by name. The other (feature) stages pair by name when
    the two models share any feature stage name (the same family: ``layer1``..``layer4``);
    when they share none (a ViT's ``blocks.i`` against a ResNet's ``layerN``), by relative
    depth: with s the shorter list's length and l the longer's, its k-th stage (k = 1..s,
    depth k/s, the end of the stage) pairs with the longer list's stage
    ``floor(k·l/s + 1/2)`` (depth closest to k/s). E.g. 12 ViT blocks against ``stem,
    layer1..layer4``: blocks 2, 5, 7, 10, 12 (1-based).
    """
    feats_a = [s for s in stages_a if s not in OUTPUT_STAGES]
    feats_b = [s for s in stages_b if s not in OUTPUT_STAGES]
    if set(feats_a) & set(feats_b) or not feats_a or not feats_b:
        return [(s, s) for s in stages_a if s in stages_b]
    short, long_ = (feats_a, feats_b) if len(feats_a) <= len(feats_b) else (feats_b, feats_a)
    ratio = len(long_) / len(short)
    picked = {s: long_[math.floor((k + 1) * ratio + 0.5) - 1] for k, s in enumerate(short)}
    if short is feats_a:
        pairs = [(a, picked[a]) for a in feats_a]
    else:
        by_a = {a: b for b, a in picked.items()}
        pairs = [(a, by_a[a]) for a in feats_a if a in by_a]
    tail = [(s, s) for s in stages_a if s in OUTPUT_STAGES and s in stages_b]
    return pairs + tail


@dataclass
class LayerwiseCKA:
    """Result of :func:`layerwise_cka`.

    Attributes:
        stages_a, stages_b: stage names of model A (rows) and model B (columns).
        matrix: (len(stages_a), len(stages_b)) CKA of A's stage i with B's stage j.
        self_matrix: (len(stages_a), len(stages_a)) CKA of A with itself (diagonal 1).
        diagonal: CKA of the matched stages (:func:`match_stages`: by name, or by relative
            depth when the architectures' stage names differ), keyed by A's stage name, in
            A's order; ``matched`` says which B stage each one was paired with.
        num_samples, num_batches: what was accumulated; ``skipped_samples`` counts the
            images of batches smaller than 4 that the unbiased estimator cannot use.
    """

    stages_a: list[str]
    stages_b: list[str]
    matrix: Tensor
    self_matrix: Tensor
    diagonal: dict[str, float]
    num_samples: int
    num_batches: int
    skipped_samples: int = 0
    pool: bool = False
    kernel: str = "linear"
    estimator: str = "minibatch unbiased HSIC_1 (Song et al. 2012; Nguyen et al. 2021)"
    extra: dict[str, Any] = field(default_factory=dict)
    matched: dict[str, str] = field(default_factory=dict)

    @property
    def sanity(self) -> dict[str, float]:
        """Teacher-vs-itself CKA per stage (should be 1.0 for every stage)."""
        return {s: float(self.self_matrix[i, i]) for i, s in enumerate(self.stages_a)}

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (lists and floats)."""
        return {
            "stages_a": list(self.stages_a),
            "stages_b": list(self.stages_b),
            "matrix": [[float(v) for v in row] for row in self.matrix.tolist()],
            "self_matrix": [[float(v) for v in row] for row in self.self_matrix.tolist()],
            "diagonal": dict(self.diagonal),
            "matched": dict(self.matched),
            "sanity": self.sanity,
            "num_samples": self.num_samples,
            "num_batches": self.num_batches,
            "skipped_samples": self.skipped_samples,
            "pool": self.pool,
            "kernel": self.kernel,
            "estimator": self.estimator,
            **self.extra,
        }


def _inputs(item: Any) -> Tensor:
    """The image tensor (B, C, H, W) of whatever a loader yields: a ``Batch`` (``.x``), an
    ``(x, y, ...)`` tuple/list, a dict with ``"x"`` / ``"image"``, or a bare tensor."""
    if isinstance(item, Tensor):
        x = item
    elif hasattr(item, "x") and isinstance(item.x, Tensor):
        x = item.x
    elif isinstance(item, dict) and isinstance(item.get("x", item.get("image")), Tensor):
        x = item.get("x", item.get("image"))
    elif isinstance(item, tuple | list) and item and isinstance(item[0], Tensor):
        x = item[0]
    else:
        raise ValueError(
            f"cannot find the input tensor in a loader item of type {type(item).__name__}; "
            "expected a Batch, an (x, y) tuple, a dict with 'x' or a tensor"
        )
    if x.dim() != 4:
        raise ValueError(f"layer-wise CKA expects image batches (B, C, H, W), got shape "
                         f"{tuple(x.shape)} (multi-view batches are not supported)")
    return x


def _pick(feats: dict[str, Tensor], stages: Sequence[str] | None, which: str) -> list[str]:
    names = list(feats)
    if stages is None:
        return names
    missing = [s for s in stages if s not in feats]
    if missing:
        raise ValueError(f"{which} has no stage(s) {missing}; available: {names}")
    return list(stages)


def _intermediates(model: nn.Module, x: Tensor, which: str) -> dict[str, Tensor]:
    fn = getattr(model, "forward_intermediates", None)
    if fn is None:
        raise ValueError(f"{which} ({type(model).__name__}) has no forward_intermediates(x); "
                         "layer-wise CKA needs the named stage outputs")
    out = fn(x)
    if not isinstance(out, dict) or not out:
        raise ValueError(f"{which}.forward_intermediates must return a non-empty dict of "
                         f"tensors, got {type(out).__name__}")
    return out


def layerwise_cka(
    model_a: nn.Module,
    model_b: nn.Module,
    loader_or_batches: Iterable[Any],
    stages: Sequence[str] | None = None,
    pool: bool = False,
    max_batches: int | None = None,
    device: str | torch.device | None = None,
    kernel: Literal["linear", "rbf"] = "linear",
) -> LayerwiseCKA:
    """Stage × stage CKA of ``model_a`` (teacher, rows) vs ``model_b`` (student, columns).

    Args:
        model_a, model_b: modules with ``forward_intermediates(x) -> dict[str, Tensor]``.
            Both are put in eval mode for the pass (their training flags are restored after)
            and moved to ``device``.
        loader_or_batches: iterable of batches (``Batch``, ``(x, y)``, dict or tensor
            (B, C, H, W)); the same batch goes through both models.
        stages: stage names to compare (each must exist in both models); default: every
            stage each model returns, in its order.
        pool: global average pooling of conv stages instead of flattening C·H·W.
        max_batches: stop after this many batches (None: the whole iterable).
        device: where to run; default the device of ``model_a``'s parameters.
        kernel: ``"linear"`` (default, as in the paper's Fig. 2) or ``"rbf"``.

    Returns:
        :class:`LayerwiseCKA` with ``matrix`` (La, Lb), the matched ``diagonal`` and the
        teacher self-similarity ``self_matrix`` (La, La) whose diagonal is the sanity row.

    Batches with fewer than 4 images (typically a loader's last one) are skipped and counted
    in ``skipped_samples``: the unbiased estimator is undefined for them.
    """
    return layerwise_cka_many(
        model_a, {"model_b": model_b}, loader_or_batches, stages=stages, pool=pool,
        max_batches=max_batches, device=device, kernel=kernel,
    )["model_b"]


def layerwise_cka_many(
    model_a: nn.Module,
    models_b: Mapping[str, nn.Module],
    loader_or_batches: Iterable[Any],
    stages: Sequence[str] | None = None,
    pool: bool = False,
    max_batches: int | None = None,
    device: str | torch.device | None = None,
    kernel: Literal["linear", "rbf"] = "linear",
) -> dict[str, LayerwiseCKA]:
    """:func:`layerwise_cka` of one teacher against several students in a single pass.

    Each batch runs the teacher once and every student once; the teacher's Grams are shared
    by all comparisons (one :class:`MinibatchCKA` whose columns are the teacher's stages
    followed by every student's). Returns ``{name: LayerwiseCKA}`` in the order of
    ``models_b``; each result equals what :func:`layerwise_cka` gives for that student.
    A student that *is* ``model_a`` (the same object) reuses the teacher's features.
    """
    if max_batches is not None and max_batches < 1:
        raise ValueError(f"max_batches must be >= 1 or None, got {max_batches}")
    if not models_b:
        raise ValueError("layerwise_cka_many needs at least one model to compare with")
    if device is None:
        param = next(iter(model_a.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    models = [model_a, *models_b.values()]
    was_training = [m.training for m in models]
    for m in models:
        m.to(device)
        m.eval()
    acc = _Accumulator(stages, pool, kernel)
    try:
        with torch.no_grad():
            for item in itertools.islice(loader_or_batches, max_batches):
                x = _inputs(item).to(device, non_blocking=True)
                if x.shape[0] < 4:
                    acc.skipped += int(x.shape[0])
                    continue
                if not x.is_floating_point():
                    raise ValueError(f"inputs must be float (normalized) images, got {x.dtype}")
                fa = _intermediates(model_a, x, "model_a")
                acc.add(fa, {key: fa if model is model_a else _intermediates(model, x, key)
                             for key, model in models_b.items()})
    finally:
        for m, flag in zip(models, was_training):
            m.train(flag)
    return acc.results()


@dataclass
class _Accumulator:
    """The running :class:`MinibatchCKA` of one teacher (A) against several students (B):
    columns are A's own stages (the sanity block), then each B's stages."""

    stages: Sequence[str] | None
    pool: bool
    kernel: str
    mb: MinibatchCKA | None = None
    names_a: list[str] = field(default_factory=list)
    names_b: dict[str, list[str]] = field(default_factory=dict)
    skipped: int = 0

    def add(self, fa: dict[str, Tensor], fbs: dict[str, dict[str, Tensor]]) -> None:
        """One batch: A's stage outputs and each B's (by key)."""
        if self.mb is None:
            self.names_a = _pick(fa, self.stages, "model_a")
            self.names_b = {k: _pick(f, self.stages, k) for k, f in fbs.items()}
            cols = len(self.names_a) + sum(len(v) for v in self.names_b.values())
            self.mb = MinibatchCKA(len(self.names_a), cols, kernel=self.kernel, pool=self.pool)
        ta = [fa[s] for s in self.names_a]
        tb = [fbs[k][s] for k, names in self.names_b.items() for s in names]
        self.mb.update(ta, ta + tb)

    def results(self) -> dict[str, LayerwiseCKA]:
        """One :class:`LayerwiseCKA` per B; warns about skipped images and a sanity block
        whose diagonal is not 1."""
        mb = self.mb
        if mb is None:
            raise ValueError(
                "no batch of at least 4 images was seen; layer-wise CKA needs batches of >= 4"
            )
        if self.skipped:
            # stacklevel 3: the caller of layerwise_cka_many.
            warnings.warn(f"skipped {self.skipped} images in batches smaller than 4",
                          RuntimeWarning, stacklevel=3)
        full = mb.compute()
        la = len(self.names_a)
        self_matrix = full[:, :la].clone()
        # A constant stage has CKA 0 with everything, itself included (see supkd.analysis.cka).
        off = [f"{s}={float(self_matrix[i, i]):.6f}" for i, s in enumerate(self.names_a)
               if float(self_matrix[i, i]) != 0.0 and abs(float(self_matrix[i, i]) - 1.0) > 1e-6]
        if off:
            warnings.warn(f"teacher-vs-itself CKA is not 1: {', '.join(off)}", RuntimeWarning,
                          stacklevel=3)
        out: dict[str, LayerwiseCKA] = {}
        col = la
        for key, names in self.names_b.items():
            matrix = full[:, col:col + len(names)].clone()
            col += len(names)
            pairs = match_stages(self.names_a, names)
            out[key] = LayerwiseCKA(
                stages_a=list(self.names_a), stages_b=names, matrix=matrix,
                self_matrix=self_matrix.clone(),
                diagonal={a: float(matrix[self.names_a.index(a), names.index(b)])
                          for a, b in pairs},
                num_samples=mb.num_samples, num_batches=mb.num_batches,
                skipped_samples=self.skipped, pool=self.pool, kernel=self.kernel,
                matched=dict(pairs),
            )
        return out


def per_stage_summary(
    runs: Sequence[tuple[str, LayerwiseCKA]],
) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """Group matched-stage CKA by method: the data of the paper's Fig. 2.

    Args:
        runs: ``(method, result)`` per student run (several runs of one method = seeds).

    Returns:
        ``(stages, {method: {"mean": [...], "std": [...], "n": k}})`` where ``stages`` are the
        teacher's matched stages common to every run (in the teacher's order; see
        :func:`stage_labels` for axis labels naming the students' stages), ``mean`` and ``std`` the
        mean and sample std (ddof 1; NaN when n < 2) over the runs of the method, per stage
        (via :func:`supkd.analysis.stats.summarize`). Non-finite CKA values are left out of a
        stage's statistics; ``n`` counts the runs.
    """
    if not runs:
        raise ValueError("per_stage_summary needs at least one run")
    stages = [s for s in runs[0][1].diagonal if all(s in r.diagonal for _, r in runs)]
    if not stages:
        raise ValueError("the runs share no stage name with the teacher")
    methods: dict[str, list[LayerwiseCKA]] = {}
    for method, res in runs:
        methods.setdefault(method, []).append(res)
    out: dict[str, dict[str, Any]] = {}
    for method, results in methods.items():
        sums = [
            summarize([r.diagonal[s] for r in results if math.isfinite(r.diagonal[s])])
            for s in stages
        ]
        out[method] = {
            "mean": [sm.mean for sm in sums],
            "std": [sm.std for sm in sums],
            "n": len(results),
        }
    return stages, out


def stage_labels(stages: Sequence[str], results: Sequence[LayerwiseCKA]) -> list[str]:
    """Axis labels of Fig. 2 for the teacher ``stages``: the name where every result matched
    it by name, ``"A ~ B"`` where all results paired it with the same other stage B (by
    relative depth), ``"A ~ ..."`` where they paired it with different ones."""
    labels = []
    for s in stages:
        partners = {r.matched.get(s, s) for r in results}
        if partners == {s}:
            labels.append(s)
        elif len(partners) == 1:
            labels.append(f"{s} ~ {partners.pop()}")
        else:
            labels.append(f"{s} ~ ...")
    return labels
