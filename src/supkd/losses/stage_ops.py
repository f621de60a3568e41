"""Shape helpers shared by the multi-stage feature losses (AT, NST, VID, OFD, ...).

Where a method's public code matches spatial sizes by average pooling the larger map down to
the smaller one (AT, NST, VID in mdistiller), :func:`pool_to_common` does it; every other
mismatch is refused with both shapes named (:func:`supkd.losses.base.stage_error`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from supkd.losses.base import stage_error

__all__ = ["check_maps", "pool_to_common", "pool_to_size"]


def check_maps(loss: object, k: int, s_shape: Sequence[int], t_shape: Sequence[int]) -> None:
    """ValueError unless both are conv maps: (B, C, H, W) or per-sample (C, H, W)."""
    if len(s_shape) not in (3, 4) or len(s_shape) != len(t_shape):
        raise stage_error(loss, k, s_shape, t_shape,
                          "are not both conv maps (C, H, W); this loss reads conv stages")


def pool_to_size(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Average-pool (B, C, H, W) down to ``size`` (a no-op when it already has it)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.adaptive_avg_pool2d(x, size)


def pool_to_common(
    s: torch.Tensor, t: torch.Tensor, loss: object, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C_s, H_s, W_s), (B, C_t, H_t, W_t) -> both at the smaller spatial size, the
    larger one average-pooled (adaptive pooling, as mdistiller's AT/NST/VID); a pair where
    neither map is at least as large as the other in both sides is refused."""
    check_maps(loss, k, tuple(s.shape), tuple(t.shape))
    (hs, ws), (ht, wt) = s.shape[-2:], t.shape[-2:]
    if hs >= ht and ws >= wt:
        return pool_to_size(s, (ht, wt)), t
    if ht >= hs and wt >= ws:
        return s, pool_to_size(t, (hs, ws))
    raise stage_error(loss, k, tuple(s.shape[1:]), tuple(t.shape[1:]),
                      "have crossed spatial sizes (neither is the larger in both sides)")
