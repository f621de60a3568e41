"""Any registered loss, ready for the generic tests: ``ready(name, **kwargs)(s, t, y)``.

A loss with per-sample state (``needs_index``: CRD) cannot be called on a bare batch: it is
bound on its first call to the widths it sees (a memory bank of :data:`NUM_SAMPLES` rows),
its NCE constant Z is fixed by one training step on other data, and it is put in eval mode,
where it is a pure function of its inputs (gradcheck, repeated calls); each call passes
``index = arange(B)``. A loss with learned parts only (CC's embeddings) is bound on its
first call to the widths it sees. Every other loss is called as it is.
"""

from __future__ import annotations

import torch

from supkd.losses import KDLoss, build_loss

NUM_SAMPLES = 64


class Ready:
    def __init__(self, name: str, **kwargs) -> None:
        self.loss: KDLoss = build_loss(name, **kwargs)
        self.bound = False

    def _bind(self, s: torch.Tensor, t: torch.Tensor) -> None:
        d_s, d_t = s[0].numel(), t[0].numel()
        self.loss.bind(d_s, d_t, NUM_SAMPLES, seed=0)
        g = torch.Generator().manual_seed(99)
        warm_s = torch.randn(8, d_s, generator=g)
        warm_t = torch.randn(8, d_t, generator=g)
        self.loss.train()
        self.loss(warm_s, warm_t, None, index=torch.arange(8) + 8)
        self.loss.eval()
        self.bound = True

    def __call__(self, s, t, y=None):
        if not self.loss.needs_index:
            if type(self.loss).bind is not KDLoss.bind and not self.bound:
                # Learned parts only (CC's embeddings): built for the widths it first sees.
                self.loss.bind(s[0].numel(), t[0].numel(), NUM_SAMPLES, seed=0)
                self.bound = True
            return self.loss(s, t, y)
        if not self.bound:
            self._bind(s, t)
        return self.loss(s, t, y, index=torch.arange(s.shape[0]))

    def __getattr__(self, name: str):
        return getattr(self.loss, name)


def ready(name: str, **kwargs) -> Ready:
    return Ready(name, **kwargs)
