"""Centered kernel alignment (CKA) between two representations of the same inputs.

Two estimators are offered:

* :func:`linear_cka` — CKA of two full feature matrices ``x`` (n, p1), ``y`` (n, p2), biased
  (Kornblith et al., 2019, "Similarity of Neural Network Representations Revisited", Eq. 5 with
  a linear kernel) or debiased (same paper, Sec. 3 / App.: HSIC replaced by the unbiased
  estimator of Song et al. 2012, which equals Székely's U-centred distance-covariance form).
* :class:`MinibatchCKA` — streaming CKA over many batches (Nguyen, Raghu & Kornblith, 2021,
  "Do Wide and Deep Networks Learn the Same Things?", Eq. 2–3): for every batch and every
  layer pair the unbiased HSIC_1 of Song et al. (2012, Eq. 5) is computed from the m×m Gram
  matrices, the per-batch values are *summed*, and CKA is the ratio of the sums.

Definitions used throughout (n samples, K = XXᵀ, L = YYᵀ, H = I − 11ᵀ/n):

    HSIC_0(K, L) = tr(KHLH) / (n − 1)²                                    (biased)
    HSIC_1(K, L) = [ tr(K̃L̃) + (1ᵀK̃1)(1ᵀL̃1) / ((n − 1)(n − 2))
                     − 2/(n − 2) · 1ᵀK̃L̃1 ] / (n(n − 3))                  (Song et al. 2012)
    CKA(K, L)    = HSIC(K, L) / sqrt(HSIC(K, K) · HSIC(L, L))

where K̃, L̃ are K, L with their diagonals set to zero. HSIC_1 needs n ≥ 4 (it divides by
n − 3); smaller batches raise ``ValueError``. For a linear kernel on column-centred features
the biased form is the feature-space expression ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F) (Kornblith et al.
2019, Eq. 5), which never forms an n×n matrix; when a width exceeds n the equal Gram form is
cheaper (‖XᵀX‖_F = ‖XXᵀ‖_F), and :func:`linear_cka` picks whichever costs fewer operations.

Conventions and the pitfalls of public CKA code this module avoids:

* **Memory.** The streaming estimator only ever forms the m×m Gram K = XXᵀ of a batch of m
  flattened features; a p×p matrix is never built, so a stage output of 800k dimensions costs
  m² floats per layer, plus the features themselves.
* **Precision.** All HSIC terms are accumulated in float64. Float32 features are centred per
  batch (HSIC_1 is exactly invariant to adding a constant vector to every feature row, so
  this changes nothing but the rounding) and their Gram is formed in float32 blocks of
  features summed in float64: full-speed BLAS with no long float32 sums. Float64 features
  stay in float64 throughout.
* **Conv outputs** (m, C, H, W) are flattened to C·H·W features by default (the spatial
  layout is part of the representation, as in Kornblith et al. 2019); ``pool=True`` applies
  global average pooling first (m, C), which compares channels only and is far cheaper.
* **Accumulation, never overwrite.** :meth:`MinibatchCKA.update` adds this batch's HSIC values
  to running sums; nothing is stored per module, so a layer seen in many batches counts every
  batch, and two layers produced by one module called twice are two separate entries (the
  hook-based pattern "store the module's last output" silently keeps one of them).
* **Constant representations.** A representation whose rows are all identical (a dead ReLU
  stage, a constant input) has zero HSIC with everything. Its CKA is defined here as 0.0 (no
  shared structure) rather than the 0/0 = NaN that a direct implementation produces.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "MinibatchCKA",
    "centered_gram",
    "cka_from_grams",
    "flatten_features",
    "gram_linear",
    "gram_rbf",
    "hsic_biased",
    "hsic_unbiased",
    "linear_cka",
]

Kernel = Literal["linear", "rbf"]

# Float32 inner products are accumulated over at most this many features before the partial
# Gram is added in float64: keeps the float32 rounding error of each partial sum small while
# each block is still a large, fast matrix product.
_GRAM_BLOCK = 8192


def flatten_features(x: Tensor, pool: bool = False) -> Tensor:
    """Turn one layer's output (m, ...) into a feature matrix (m, p).

    ``pool=False`` flattens everything after the batch dimension (C·H·W for conv maps);
    ``pool=True`` averages all dimensions after the channel dimension first (global average
    pooling, (m, C, H, W) -> (m, C)). 2-D inputs (m, p) are returned unchanged.
    """
    if x.dim() < 2:
        raise ValueError(f"features must have a batch dimension and at least one feature "
                         f"dimension, got shape {tuple(x.shape)}")
    if pool and x.dim() > 2:
        x = x.mean(dim=tuple(range(2, x.dim())))
    return x.reshape(x.shape[0], -1)


def _is_constant(x: Tensor) -> bool:
    """True when every row of ``x`` (m, p) equals the first one exactly."""
    return bool((x == x[:1]).all())


def _centered(x: Tensor) -> Tensor:
    """Column-centred copy of ``x`` (m, p) in its own dtype; exact zeros for constant rows.

    The column mean is taken in float64 so that centring float32 features adds no more than
    one float32 rounding per entry.
    """
    if _is_constant(x):
        return torch.zeros_like(x)
    mean = x.mean(dim=0, keepdim=True, dtype=torch.float64)
    return x - mean.to(x.dtype)


def gram_linear(x: Tensor) -> Tensor:
    """Linear Gram matrix K = XXᵀ (m, m) in float64 of features ``x`` (m, p).

    Float64 input is multiplied directly. Lower-precision input is multiplied in blocks of
    features in its own dtype (float32 BLAS speed) and the blocks are summed in float64.
    Nothing larger than (m, m) plus one feature block is allocated.
    """
    if x.dim() != 2:
        raise ValueError(f"gram_linear expects (m, p) features, got shape {tuple(x.shape)}")
    if x.dtype == torch.float64:
        return x @ x.T
    if not x.is_floating_point():
        x = x.float()
    if x.dtype in (torch.float16, torch.bfloat16):
        # Half-precision products lose too much for HSIC's cancellations.
        x = x.float()
    m, p = x.shape
    if p <= _GRAM_BLOCK:
        return (x @ x.T).double()
    out = torch.zeros(m, m, dtype=torch.float64, device=x.device)
    for start in range(0, p, _GRAM_BLOCK):
        blk = x[:, start:start + _GRAM_BLOCK]
        out += (blk @ blk.T).double()
    return out


def centered_gram(x: Tensor) -> Tensor:
    """Gram (m, m) float64 of the column-centred features ``x`` (m, p), in feature blocks.

    Equal to ``gram_linear(x - x.mean(0))`` up to rounding, but centres one block of features
    at a time, so the only feature-sized temporary is one block (not a centred copy of all p
    columns: for a ResNet-50 ``layer1`` batch of 256 CIFAR images that would be another
    268 MB). Float64 input stays float64; lower precisions are multiplied in float32 per block
    and the blocks summed in float64 (see :func:`gram_linear`).

    Centring only serves precision (smaller numbers in the float32 products): HSIC_1 is
    exactly invariant to a common shift of the feature rows, so the block mean is taken with a
    cheap (1, m) x (m, b) product in the input precision, and its rounding, a tiny common
    offset, changes nothing. Returns exact zeros when every row of ``x`` is the same (a
    constant representation, see the module notes); that exact check reads the features
    again and so only runs when the centred energy is at rounding level.
    """
    if x.dim() != 2:
        raise ValueError(f"centered_gram expects (m, p) features, got shape {tuple(x.shape)}")
    if not x.is_floating_point() or x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    m, p = x.shape
    out = torch.zeros(m, m, dtype=torch.float64, device=x.device)
    ones = torch.full((1, m), 1.0 / m, dtype=x.dtype, device=x.device)
    offset_energy = torch.zeros((), dtype=torch.float64, device=x.device)
    for start in range(0, p, _GRAM_BLOCK):
        blk = x[:, start:start + _GRAM_BLOCK]
        mu = ones @ blk  # (1, b) column means
        c = blk - mu
        g = c @ c.T
        out += g if g.dtype == torch.float64 else g.double()
        offset_energy += m * (mu.double() ** 2).sum()
    centred_energy = torch.trace(out)
    # ‖X‖²_F = tr(centred Gram) + m‖μ‖²; a ratio at float rounding level means the rows may
    # all be equal: decide exactly.
    if float(centred_energy) <= 1e-9 * float(centred_energy + offset_energy) and _is_constant(x):
        out.zero_()
    return out


def gram_rbf(k_linear: Tensor, threshold: float = 1.0) -> Tensor:
    """RBF Gram exp(−‖x_i − x_j‖² / (2σ²)) (m, m) from a linear Gram ``k_linear`` (m, m).

    Bandwidth by the median heuristic as in Kornblith et al. (2019, Sec. 6.1 and their
    reference code): σ = ``threshold`` · sqrt(median of the squared distances between
    distinct samples). Squared distances come from the linear Gram,
    ‖x_i − x_j‖² = K_ii + K_jj − 2K_ij, so no feature-sized matrix is formed.

    Degenerate batches: when all samples coincide the zero matrix is returned (HSIC is
    invariant to adding a constant to every kernel entry, and an all-ones RBF kernel would
    only turn the exact 0 into rounding noise); when more than half of the pairs coincide
    the median of the non-zero distances is used so that σ stays > 0.
    """
    if threshold <= 0:
        raise ValueError(f"rbf threshold must be > 0, got {threshold}")
    diag = torch.diagonal(k_linear)
    sq = (diag[:, None] + diag[None, :] - 2.0 * k_linear).clamp_min(0.0)
    m = sq.shape[0]
    iu = torch.triu_indices(m, m, offset=1, device=sq.device)
    dist = sq[iu[0], iu[1]]
    if not bool((dist > 0).any()):
        return torch.zeros_like(sq)
    med = dist.median()
    if med <= 0:
        med = dist[dist > 0].median()
    sigma2 = threshold**2 * med
    return torch.exp(-sq / (2.0 * sigma2))


def hsic_biased(kx: Tensor, ky: Tensor) -> Tensor:
    """Biased HSIC_0 = tr(KHLH) / (n − 1)² of two (n, n) Grams (Gretton et al. 2005)."""
    n = kx.shape[0]
    kc = kx - kx.mean(dim=0, keepdim=True)
    kc = kc - kc.mean(dim=1, keepdim=True)
    lc = ky - ky.mean(dim=0, keepdim=True)
    lc = lc - lc.mean(dim=1, keepdim=True)
    return (kc * lc).sum() / (n - 1) ** 2


def _check_n(n: int) -> None:
    if n < 4:
        raise ValueError(
            f"the unbiased HSIC estimator needs at least 4 samples per batch (it divides by "
            f"n - 3), got {n}"
        )


def hsic_unbiased(kx: Tensor, ky: Tensor) -> Tensor:
    """Unbiased HSIC_1 of Song et al. (2012, Eq. 5) of two (n, n) Grams, n ≥ 4.

    HSIC_1 = [tr(K̃L̃) + (1ᵀK̃1)(1ᵀL̃1)/((n−1)(n−2)) − 2/(n−2)·1ᵀK̃L̃1] / (n(n−3)),
    with K̃, L̃ the Grams with zeroed diagonals. O(n²) work (no matrix product).
    """
    n = kx.shape[0]
    _check_n(n)
    kt = kx.clone()
    kt.diagonal().zero_()
    lt = ky.clone()
    lt.diagonal().zero_()
    kr, lr = kt.sum(dim=1), lt.sum(dim=1)
    return (
        (kt * lt).sum()
        + kr.sum() * lr.sum() / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (kr @ lr)
    ) / (n * (n - 3))


def _ratio(num: float, den_a: float, den_b: float) -> float:
    """num / sqrt(den_a · den_b) with this module's conventions for degenerate inputs."""
    if den_a == 0.0 or den_b == 0.0:
        # A constant representation: HSIC is exactly 0 with everything; CKA defined as 0.
        return 0.0
    if den_a < 0.0 or den_b < 0.0:
        # The unbiased estimator of a self-HSIC can come out negative when the batch is far
        # too small for the representation; the ratio is then meaningless.
        warnings.warn(
            "unbiased self-HSIC estimate is negative (too few samples); CKA is NaN",
            RuntimeWarning,
            stacklevel=3,
        )
        return math.nan
    return num / math.sqrt(den_a * den_b)


def cka_from_grams(kx: Tensor, ky: Tensor, debiased: bool = False) -> float:
    """CKA of two (n, n) Gram matrices (any kernel): HSIC(K, L)/sqrt(HSIC(K, K)·HSIC(L, L)).

    ``debiased=False`` uses HSIC_0 (Kornblith et al. 2019, Eq. 4), ``True`` uses HSIC_1
    (Song et al. 2012). Computed in float64. Constant representations give 0.0.
    """
    if kx.shape != ky.shape or kx.dim() != 2 or kx.shape[0] != kx.shape[1]:
        raise ValueError(f"expected two (n, n) Grams, got {tuple(kx.shape)} and {tuple(ky.shape)}")
    kx, ky = kx.double(), ky.double()
    fn = hsic_unbiased if debiased else hsic_biased
    return _ratio(float(fn(kx, ky)), float(fn(kx, kx)), float(fn(ky, ky)))


def linear_cka(
    x: Tensor,
    y: Tensor,
    debiased: bool = False,
    form: Literal["auto", "features", "gram"] = "auto",
) -> float:
    """Linear CKA of ``x`` (n, p1) and ``y`` (n, p2) (rows = the same n inputs), in float64.

    Biased (Kornblith et al. 2019, Eq. 5), on column-centred X, Y:
        CKA = ‖YᵀX‖²_F / (‖XᵀX‖_F · ‖YᵀY‖_F).
    Debiased (Kornblith et al. 2019, following Song et al. 2012): the three HSICs are HSIC_1.
    With K = XXᵀ, the HSIC_1 terms in feature space are
        tr(K̃L̃)  = ‖YᵀX‖²_F − Σ_i ‖x_i‖²‖y_i‖²,
        K̃1     = Xs − diag(K)  with s = Σ_i x_i (= 0 after centring),
    so neither form needs more than a p1×p2 or n×n matrix.

    ``form`` picks the algebraically equal evaluation: ``"features"`` (p1×p2 cross products,
    O(n·p1·p2)), ``"gram"`` (n×n Grams, O(n²·(p1+p2))) or ``"auto"`` (the cheaper one).
    Inputs with more than two dimensions are flattened per sample. Needs n ≥ 2 (biased) or
    n ≥ 4 (debiased); a constant representation gives 0.0.
    """
    if form not in ("auto", "features", "gram"):
        raise ValueError(f"form must be 'auto', 'features' or 'gram', got {form!r}")
    x, y = flatten_features(x), flatten_features(y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same number of rows, got {x.shape[0]} and "
                         f"{y.shape[0]}")
    n = x.shape[0]
    if debiased:
        _check_n(n)
    elif n < 2:
        raise ValueError(f"CKA needs at least 2 samples, got {n}")
    x = _centered(x.double())
    y = _centered(y.double())
    p1, p2 = x.shape[1], y.shape[1]
    if form == "auto":
        form = "features" if p1 * p2 + p1 * p1 + p2 * p2 <= n * (p1 + p2 + 1) else "gram"

    if form == "gram":
        return cka_from_grams(gram_linear(x), gram_linear(y), debiased=debiased)

    # Feature-space evaluation: ‖AᵀB‖²_F for the three pairs.
    xy = ((y.T @ x) ** 2).sum()
    xx = ((x.T @ x) ** 2).sum()
    yy = ((y.T @ y) ** 2).sum()
    if not debiased:
        return _ratio(float(xy), float(xx), float(yy))
    # Centred features: K̃1 = −diag(K), 1ᵀK̃1 = −tr(K).
    dk = (x * x).sum(dim=1)
    dl = (y * y).sum(dim=1)

    def h1(tr_kl: Tensor, da: Tensor, db: Tensor) -> float:
        tr_t = tr_kl - (da * db).sum()
        return float(
            (tr_t + da.sum() * db.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (da @ db))
            / (n * (n - 3))
        )

    return _ratio(h1(xy, dk, dl), h1(xx, dk, dk), h1(yy, dl, dl))


class MinibatchCKA:
    """Streaming CKA between every layer of model A and every layer of model B.

    Nguyen, Raghu & Kornblith (2021, Eq. 2–3): over k batches of m samples,

        CKA_ij = Σ_b HSIC_1(K_i^b, L_j^b)
                 / sqrt(Σ_b HSIC_1(K_i^b, K_i^b) · Σ_b HSIC_1(L_j^b, L_j^b))

    with HSIC_1 the unbiased estimator of Song et al. (2012) on the batch Grams
    K_i^b = X_i^b X_i^bᵀ (m, m). Because HSIC_1 is unbiased, the result does not drift with the
    batch size the way averaged biased per-batch CKA does.

    Args:
        num_layers_a, num_layers_b: how many layers each ``update`` receives (La, Lb).
        kernel: ``"linear"`` or ``"rbf"`` (median-heuristic bandwidth per batch and per layer,
            see :func:`gram_rbf`; σ = ``rbf_threshold`` · median distance).
        pool: global average pooling of conv outputs instead of C·H·W flattening.

    Memory: La + Lb Grams of m×m float64 per batch plus the (La, Lb) running sums; no p×p
    matrix. Work per batch: O(m²·p) per layer for the Grams, O(m²) per layer pair.
    """

    def __init__(
        self,
        num_layers_a: int,
        num_layers_b: int,
        kernel: Kernel = "linear",
        pool: bool = False,
        rbf_threshold: float = 1.0,
    ) -> None:
        if num_layers_a < 1 or num_layers_b < 1:
            raise ValueError(f"need at least one layer on each side, got {num_layers_a} and "
                             f"{num_layers_b}")
        if kernel not in ("linear", "rbf"):
            raise ValueError(f"kernel must be 'linear' or 'rbf', got {kernel!r}")
        if rbf_threshold <= 0:
            raise ValueError(f"rbf_threshold must be > 0, got {rbf_threshold}")
        self.num_layers_a = int(num_layers_a)
        self.num_layers_b = int(num_layers_b)
        self.kernel: Kernel = kernel
        self.pool = bool(pool)
        self.rbf_threshold = float(rbf_threshold)
        self.reset()

    def reset(self) -> None:
        """Forget every batch seen so far."""
        self._cross = torch.zeros(self.num_layers_a, self.num_layers_b, dtype=torch.float64)
        self._self_a = torch.zeros(self.num_layers_a, dtype=torch.float64)
        self._self_b = torch.zeros(self.num_layers_b, dtype=torch.float64)
        self.num_batches = 0
        self.num_samples = 0

    def _gram(self, t: Tensor, side: str) -> Tensor:
        """Zero-diagonal Gram (m, m) float64 of one layer's output ``t`` (m, ...)."""
        if not isinstance(t, Tensor):
            raise ValueError(f"layers of model {side} must be tensors, got {type(t).__name__}")
        x = flatten_features(t.detach(), pool=self.pool)
        k = centered_gram(x)
        if self.kernel == "rbf":
            k = gram_rbf(k, self.rbf_threshold)
        k.diagonal().zero_()
        return k

    def update(
        self,
        layers_a: Sequence[Tensor] | Mapping[str, Tensor],
        layers_b: Sequence[Tensor] | Mapping[str, Tensor],
    ) -> None:
        """Add one batch: ``layers_a`` (La tensors (m, ...)) and ``layers_b`` (Lb tensors (m, ...)),
        all computed on the same m ≥ 4 inputs in the same order. Mappings are read in order.

        A tensor object passed more than once (e.g. model A's layers also listed in
        ``layers_b`` for a self-similarity block) has its Gram computed once.
        """
        if isinstance(layers_a, Mapping):
            layers_a = list(layers_a.values())
        if isinstance(layers_b, Mapping):
            layers_b = list(layers_b.values())
        for side, layers, expected in (("A", layers_a, self.num_layers_a),
                                       ("B", layers_b, self.num_layers_b)):
            if len(layers) != expected:
                raise ValueError(f"update expected {expected} layers for model {side}, got "
                                 f"{len(layers)}")
        sizes = {int(t.shape[0]) for t in [*layers_a, *layers_b]}
        if len(sizes) != 1:
            raise ValueError(f"all layers of one update must share the batch size, got "
                             f"{sorted(sizes)}")
        m = sizes.pop()
        _check_n(m)
        cache: dict[int, Tensor] = {}

        def grams(layers: Sequence[Tensor], side: str) -> Tensor:
            out = []
            for t in layers:
                if id(t) not in cache:
                    cache[id(t)] = self._gram(t, side)
                out.append(cache[id(t)])
            return torch.stack(out)

        ka = grams(layers_a, "A")  # (La, m, m), diag 0
        kb = grams(layers_b, "B")  # (Lb, m, m), diag 0
        cache.clear()
        fa, fb = ka.reshape(ka.shape[0], -1), kb.reshape(kb.shape[0], -1)
        ra, rb = ka.sum(dim=2), kb.sum(dim=2)  # K̃1: (La, m), (Lb, m)
        sa, sb = ra.sum(dim=1), rb.sum(dim=1)  # 1ᵀK̃1: (La,), (Lb,)
        scale = 1.0 / (m * (m - 3))

        def h1(fx: Tensor, fy: Tensor, rx: Tensor, ry: Tensor, sx: Tensor, sy: Tensor) -> Tensor:
            # Song et al. (2012, Eq. 5) for every pair at once: (Lx, Ly).
            return scale * (
                fx @ fy.T
                + sx[:, None] * sy[None, :] / ((m - 1) * (m - 2))
                - 2.0 / (m - 2) * (rx @ ry.T)
            )

        cross = h1(fa, fb, ra, rb, sa, sb)
        self_a = (fa * fa).sum(1) + sa * sa / ((m - 1) * (m - 2)) - 2.0 / (m - 2) * (ra * ra).sum(1)
        self_b = (fb * fb).sum(1) + sb * sb / ((m - 1) * (m - 2)) - 2.0 / (m - 2) * (rb * rb).sum(1)
        self._cross += cross.cpu()
        self._self_a += (scale * self_a).cpu()
        self._self_b += (scale * self_b).cpu()
        self.num_batches += 1
        self.num_samples += m

    @property
    def hsic_sums(self) -> tuple[Tensor, Tensor, Tensor]:
        """Running sums (cross (La, Lb), self_a (La,), self_b (Lb,)) of the per-batch HSIC_1."""
        return self._cross.clone(), self._self_a.clone(), self._self_b.clone()

    def compute(self) -> Tensor:
        """CKA matrix (La, Lb) float64 from all batches so far (entry [i, j]: layer i of A vs
        layer j of B). Pairs with a constant layer are 0.0; raises if no batch was added."""
        if self.num_batches == 0:
            raise ValueError("MinibatchCKA.compute() called before any update()")
        out = torch.empty(self.num_layers_a, self.num_layers_b, dtype=torch.float64)
        for i in range(self.num_layers_a):
            for j in range(self.num_layers_b):
                out[i, j] = _ratio(
                    float(self._cross[i, j]), float(self._self_a[i]), float(self._self_b[j])
                )
        return out
