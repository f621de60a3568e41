"""A dispatch-mode probe shared by the GPU-loader tests: records every op that reads a CPU
tensor into a tensor on another device (a host-to-device copy; on CUDA, from pageable
memory, one that waits for the queued work)."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class HostToDevice(TorchDispatchMode):
    """Records ops that read a CPU tensor into a tensor on another device (``self.ops``)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        ins = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        outs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        if any(t.device.type == "cpu" for t in ins) and any(t.device.type != "cpu" for t in outs):
            self.ops.append(str(func))
        return out
