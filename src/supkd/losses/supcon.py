"""Supervised contrastive loss for teacher pre-training (Khosla et al., 2020).

Reference: P. Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020, Eq. 2
(L^sup_out). With no labels the same code is the NT-Xent loss of SimCLR (Chen et al.,
2020): the only positive of a view is the other view(s) of the same image.
"""

from __future__ import annotations

import torch
from torch import nn

from supkd.losses.common import check_labels, check_temperature, full_precision, upcast

__all__ = ["SupConLoss"]


class SupConLoss(nn.Module):
    r"""L^sup_out of Khosla et al. (2020), Eq. 2; SimCLR's loss when ``labels`` is None.

    With the N = B·V views stacked as anchors i ∈ I, A(i) = I \ {i} (self-contrast masked
    out) and P(i) = {p ∈ A(i) : y_p = y_i}:

        L = (τ / τ_base) · mean_{i : |P(i)| > 0}  −1/|P(i)| Σ_{p∈P(i)}
            log( exp(z_i·z_p/τ) / Σ_{a∈A(i)} exp(z_i·z_a/τ) )

    Anchors with no positive (a class that occurs once in a single-view batch) are left
    out of the mean instead of producing 0/0; when no anchor has a positive the result is
    a zero that is still connected to the graph. The log-softmax is max-shifted (through
    ``torch.logsumexp``) and computed in float32 even under autocast.

    The factor τ/τ_base: the public SupContrast code (Khosla et al.'s ``SupConLoss``)
    multiplies the loss by ``temperature / base_temperature`` with ``base_temperature=0.07``
    by default, so at τ = 0.1 its loss and gradient are 0.1/0.07 ≈ 1.43× the plain
    L^sup_out of Eq. 2 (at τ = 0.07 the factor is 1). supkd's default (None: τ_base = τ) does
    not scale, so a recipe taken from that code trains with 0.7× of that code's gradient
    unless ``base_temperature=0.07`` is given. The "paper" preset does so, to keep the lr 0.5
    of that code's recipe at the gradient scale it was tuned for: the ``supcon_teacher`` /
    ``supcon_student`` runs of ``configs/paper/cifar10.yaml`` and
    ``configs/paper/imagenet.yaml`` (so also ``ablation.yaml``). The fast preset and the
    demo keep no factor (their learning rates were chosen without it).

    Args:
        temperature: τ > 0 (Khosla et al. use 0.1 on CIFAR).
        base_temperature: τ_base > 0; the loss is scaled by τ/τ_base as in the public
            SupCon code (which uses 0.07). None means τ_base = τ (no scaling).

    Shapes:
        features: (B, V, D), V ≥ 1 augmented views of each of B images. Expected to be
            L2-normalized along D (the projection head's output); the loss does not
            normalize, because that is the head's job and normalizing twice hides bugs.
        labels: (B,) integer class labels, or None for SimCLR (instance positives).
        returns: scalar, float32 (float64 for float64 features).
    """

    def __init__(self, temperature: float = 0.1, base_temperature: float | None = None) -> None:
        super().__init__()
        self.temperature = check_temperature(temperature, "temperature")
        self.base_temperature = (
            self.temperature
            if base_temperature is None
            else check_temperature(base_temperature, "base_temperature")
        )

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, base_temperature={self.base_temperature}"

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if not isinstance(features, torch.Tensor) or features.dim() != 3:
            shape = tuple(features.shape) if isinstance(features, torch.Tensor) else features
            raise ValueError(f"features: expected shape (B, V, D), got {shape}")
        if not features.is_floating_point():
            raise ValueError(f"features: expected a floating tensor, got dtype {features.dtype}")
        batch, views, _ = features.shape
        if batch == 0 or views == 0:
            raise ValueError(f"features: empty batch, shape {tuple(features.shape)}")
        labels = check_labels(labels, batch, f"features of shape {tuple(features.shape)}")

        with full_precision(features):
            z = upcast(features)
            # Stack views view-major (N = V·B rows) as the public SupCon code does.
            z = torch.cat(torch.unbind(z, dim=1), dim=0)
            n = z.shape[0]
            ids = labels if labels is not None else torch.arange(batch, device=z.device)
            ids = ids.to(z.device).repeat(views)
            self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
            pos_mask = (ids[:, None] == ids[None, :]) & ~self_mask
            pos_count = pos_mask.sum(dim=1)
            has_pos = (pos_count > 0).to(z.dtype)

            logits = (z @ z.T) / self.temperature
            # logsumexp subtracts the row max internally, so exp never overflows; the -inf on
            # the diagonal removes self-contrast from the denominator A(i). (A row is all -inf
            # only when N = 1; masked_fill's backward then zeroes its gradient.)
            denom = torch.logsumexp(logits.masked_fill(self_mask, float("-inf")), dim=1)
            log_prob = logits - denom[:, None]
            # where (not multiply): the unused diagonal never enters a 0·x product.
            pos_log_prob = torch.where(pos_mask, log_prob, torch.zeros_like(log_prob)).sum(1)
            mean_log_prob_pos = pos_log_prob / pos_count.clamp_min(1).to(z.dtype)
            # Mean over anchors with a positive, written without a data-dependent branch so
            # that a GPU step needs no host sync; with no such anchor it is a graph-connected 0.
            n_valid = has_pos.sum().clamp_min(1.0)
            scale = self.temperature / self.base_temperature
            return scale * (-mean_log_prob_pos * has_pos).sum() / n_valid
