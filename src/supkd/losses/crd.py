"""``crd``: contrastive representation distillation (Tian et al., ICLR 2020), a KD baseline.

Unlike the other losses, CRD has learned parts (two linear embeddings) and per-sample state
(a memory bank of every training sample's embeddings): the distill task builds them with
:meth:`CRDLoss.bind`, trains the embeddings with the student (they are the task's, never the
student's weights) and saves the bank in its checkpoints (``state_dict()``'s extra state).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from supkd.losses.base import KDLoss
from supkd.losses.common import (
    check_number,
    check_temperature,
    l2_normalize,
    other_indices,
)
from supkd.losses.registry import register_loss

__all__ = ["CRDLoss"]

_SEED_MIX = 0x9E3779B97F4A7C15  # mixes (seed, step) into one 63-bit generator seed
_MAX_SEED = 2**63 - 1


def _check_count(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"argument '{name}': expected an integer >= {minimum}, got {value!r}")
    return value


@register_loss("crd")
class CRDLoss(KDLoss):
    r"""Contrastive representation distillation (Tian, Krishnan & Isola, "Contrastive
    Representation Distillation", ICLR 2020, Eqs. 10-18, with the NCE estimate of their
    public RepDistiller code).

    Student and teacher features (B, ...) are flattened and embedded by linear maps to
    ``feat_dim`` (128) dimensions, L2-normalized: v_s, v_t (B, d). A memory bank holds one
    student and one teacher embedding per training sample (N × d each). For sample i with
    index n_i, the positive is bank entry n_i and the negatives are K other samples:
    K = ``num_negatives`` (16,384) drawn uniformly, with replacement, from the other N − 1
    training samples, or, when N − 1 ≤ ``num_negatives`` (a data set smaller than the
    negatives asked for), all N − 1 other samples exactly once. Each side is scored against
    the other side's bank:

        P(v, m) = exp(⟨v, m⟩ / τ) / Z,        c = K / N  (K noise samples, uniform noise 1/N)
        h = P / (P + c)                       (probability that the pair is the positive)
        L_side = −(1/B) Σ_i [ log h(v_i, m_{n_i}) + Σ_{k ∈ neg(i)} log(1 − h(v_i, m_k)) ]
        L = L_s (v_s against the teacher bank) + L_t (v_t against the student bank)

    Z (one per side) is estimated once, at the first training step, as N times the mean of
    exp(⟨v, m⟩/τ) over that step's B·(K + 1) scores, then kept fixed (as the public code
    does; the paper's Eq. 19 writes h = e^{s/τ}/(e^{s/τ} + K/N), i.e. Z = 1, which with
    τ = 0.07 saturates h at 1). After each training step the bank rows of the batch become
    ``normalize(momentum·m + (1 − momentum)·v)`` (momentum 0.5). log h and log(1 − h) are
    computed as −softplus(log c − log P) and −softplus(log P − log c): exact and finite,
    where the public code adds eps = 1e-7 to the denominator.

    In eval mode (``loss.eval()``) the loss is a pure function: no bank update, Z estimated
    from the batch when not yet set but not stored, the same negatives as the last step.

    Differences from RepDistiller's CIFAR script: its data set draws the negatives from
    *other classes* only (``mode='exact'``), which needs every training label up front; here
    they are other *samples*, as the paper describes (with 10 classes about 1 in 10
    negatives shares the anchor's class). Negatives are drawn from a generator seeded by
    (the loss's seed, step), so a resumed run draws the same ones (bit-exact resume), and
    scores are computed against the whole bank (B × N, then the B × (K + 1) needed are
    picked), which needs less memory than gathering B·(K + 1) bank rows when K is large.

    Under DDP the distill task gathers the global batch (``compares_samples``): every rank
    computes the same loss, updates its bank with every rank's samples and so holds the same
    bank; no bank is broadcast.

    Shapes: student (B, ...), teacher (B, ...) with the same B (widths may differ, fixed by
    :meth:`bind`); ``index`` (B,) long in [0, N), required; labels unused; returns a scalar.

    Args:
        feat_dim: width d of the embeddings (128).
        num_negatives: K, negatives per sample (16,384).
        temperature: τ > 0 (0.07).
        momentum: bank momentum in [0, 1) (0.5).
    """

    label = "CRD (Tian et al. 2020)"
    paper_eq = "Tian et al. 2020"
    reference = (
        'Tian, Krishnan & Isola, "Contrastive Representation Distillation", ICLR 2020'
    )
    summary = "contrastive (NCE) matching of 128-d embeddings against a memory bank"
    compares_samples = True
    needs_index = True
    same_width = False
    flatten_inputs = True

    def __init__(
        self,
        feat_dim: int = 128,
        num_negatives: int = 16384,
        temperature: float = 0.07,
        momentum: float = 0.5,
    ) -> None:
        super().__init__()
        self.feat_dim = _check_count(feat_dim, "feat_dim", 1)
        self.num_negatives = _check_count(num_negatives, "num_negatives", 1)
        self.temperature = check_temperature(temperature, "temperature")
        self.momentum = check_number(momentum, "momentum")
        if self.momentum >= 1.0:
            raise ValueError(f"argument 'momentum': expected a number in [0, 1), got {momentum!r}")
        self.embed_s: nn.Linear | None = None
        self.embed_t: nn.Linear | None = None
        # Plain tensors, not buffers: DDP would broadcast buffers from rank 0 at every
        # forward (N × d floats twice), and every rank already holds the same bank.
        self.memory_s: torch.Tensor | None = None
        self.memory_t: torch.Tensor | None = None
        self.z_s: float | None = None
        self.z_t: float | None = None
        self.seed = 0
        self.steps = 0

    def extra_repr(self) -> str:
        n = None if self.memory_s is None else self.memory_s.shape[0]
        return (
            f"feat_dim={self.feat_dim}, num_negatives={self.num_negatives}, "
            f"temperature={self.temperature}, momentum={self.momentum}, num_samples={n}"
        )

    # --- state --------------------------------------------------------------------------

    def bind(
        self, student_width: int, teacher_width: int, num_samples: int | None, seed: int = 0
    ) -> None:
        """Build the embeddings (B, student_width | teacher_width) -> (B, feat_dim), from the
        global generator like any layer, and the bank of ``num_samples`` rows per side:
        uniform in ±1/√(d/3) as in RepDistiller (rows of norm about 1), from ``seed``."""
        if not isinstance(num_samples, int) or num_samples < 2:
            raise ValueError(
                "CRDLoss: needs the number of training samples (at least 2) for its memory "
                f"bank, got {num_samples!r}"
            )
        self.embed_s = nn.Linear(student_width, self.feat_dim)
        self.embed_t = nn.Linear(teacher_width, self.feat_dim)
        self.seed = int(seed) % _MAX_SEED
        # Mixed: the task passes the run's init seed, which also seeds the model weights.
        gen = torch.Generator().manual_seed(self.seed * _SEED_MIX % _MAX_SEED)
        bound = 1.0 / math.sqrt(self.feat_dim / 3.0)
        shape = (num_samples, self.feat_dim)
        self.memory_s = (torch.rand(shape, generator=gen) * 2.0 - 1.0) * bound
        self.memory_t = (torch.rand(shape, generator=gen) * 2.0 - 1.0) * bound
        self.z_s = self.z_t = None
        self.steps = 0

    def get_extra_state(self) -> dict[str, Any]:
        if self.memory_s is None or self.memory_t is None:
            return {}
        return {
            "memory_s": self.memory_s.detach().cpu().clone(),
            "memory_t": self.memory_t.detach().cpu().clone(),
            "z_s": self.z_s,
            "z_t": self.z_t,
            "seed": self.seed,
            "steps": self.steps,
        }

    def set_extra_state(self, state: Any) -> None:
        if not state:
            return
        if self.memory_s is None or tuple(state["memory_s"].shape) != tuple(self.memory_s.shape):
            have = None if self.memory_s is None else tuple(self.memory_s.shape)
            raise ValueError(
                f"CRDLoss: saved memory bank {tuple(state['memory_s'].shape)} does not fit "
                f"this loss's bank {have} (another data set or feat_dim?)"
            )
        device = self.memory_s.device
        self.memory_s = state["memory_s"].to(device, torch.float32).clone()
        self.memory_t = state["memory_t"].to(device, torch.float32).clone()
        self.z_s, self.z_t = state["z_s"], state["z_t"]
        self.seed, self.steps = int(state["seed"]), int(state["steps"])

    # --- the loss -----------------------------------------------------------------------

    def draw_negatives(self, index: torch.Tensor) -> torch.Tensor:
        """(B, K) bank rows other than each sample's own for this step (the class docstring
        says how they are drawn); a function of (seed, steps done, index)."""
        if self.memory_s is None:
            raise ValueError("CRDLoss: call bind(...) first")
        num_samples = self.memory_s.shape[0]
        if self.num_negatives >= num_samples - 1:
            return other_indices(index, num_samples)
        gen = torch.Generator(device=index.device)
        gen.manual_seed((self.seed * _SEED_MIX + self.steps + 1) % _MAX_SEED)
        draw = torch.randint(
            0, num_samples - 1, (index.shape[0], self.num_negatives),
            generator=gen, device=index.device,
        )  # fmt: skip
        return draw + (draw >= index[:, None]).long()

    def _side(
        self, v: torch.Tensor, memory: torch.Tensor, ids: torch.Tensor, z: float | None
    ) -> tuple[torch.Tensor, float]:
        """NCE loss of embeddings v (B, d) against bank rows ``ids`` (B, K + 1; column 0 the
        positive) and the Z used (estimated from this batch when ``z`` is None)."""
        scores = (v @ memory.to(v.dtype).T).gather(1, ids) / self.temperature  # (B, K + 1)
        if z is None:
            # A constant, as in the public code (a Python float there too).
            z = float(scores.detach().exp().mean()) * memory.shape[0]
        log_p = scores - math.log(z)
        k = ids.shape[1] - 1
        log_c = math.log(k / memory.shape[0])
        pos = -F.softplus(log_c - log_p[:, 0]).sum()
        neg = -F.softplus(log_p[:, 1:] - log_c).sum()
        return -(pos + neg) / v.shape[0], z

    def _embed(self, layer: nn.Linear, x: torch.Tensor, side: str) -> torch.Tensor:
        if x.shape[1] != layer.in_features:
            raise ValueError(
                f"CRDLoss: {side} width {x.shape[1]} differs from the bound width "
                f"{layer.in_features} (bind() was called for other features)"
            )
        return l2_normalize(F.linear(x, layer.weight.to(x.dtype), layer.bias.to(x.dtype)))

    def compute(self, student, teacher, labels, index=None):
        if self.embed_s is None or self.embed_t is None or self.memory_s is None:
            raise ValueError(
                "CRDLoss: call bind(student_width, teacher_width, num_samples) first (the "
                "distill task does it)"
            )
        num_samples = self.memory_s.shape[0]
        if index.device.type == "cpu" and int(index.max()) >= num_samples:
            raise ValueError(
                f"CRDLoss: index {int(index.max())} out of range for a bank of {num_samples} "
                "training samples"
            )
        if self.memory_s.device != student.device:
            self.memory_s = self.memory_s.to(student.device)
            self.memory_t = self.memory_t.to(student.device)
        v_s = self._embed(self.embed_s, student, "student")
        v_t = self._embed(self.embed_t, teacher, "teacher")
        ids = torch.cat([index[:, None], self.draw_negatives(index)], dim=1)
        loss_s, z_s = self._side(v_s, self.memory_t, ids, self.z_s)
        loss_t, z_t = self._side(v_t, self.memory_s, ids, self.z_t)
        if self.training:
            self.z_s, self.z_t = z_s, z_t
            self._update_bank(index, v_s.detach(), v_t.detach())
            self.steps += 1
        return loss_s + loss_t

    @torch.no_grad()
    def _update_bank(self, index: torch.Tensor, v_s: torch.Tensor, v_t: torch.Tensor) -> None:
        m = self.momentum
        for name, v in (("memory_s", v_s), ("memory_t", v_t)):
            bank = getattr(self, name)
            rows = bank.index_select(0, index) * m + v.to(bank.dtype) * (1.0 - m)
            # Out of place: this step's scores saved the old bank for their backward (an N×d
            # copy per step; gathering B·(K + 1) rows instead would cost more when K is large).
            setattr(self, name, bank.index_copy(0, index, l2_normalize(rows)))
