"""The one device resolver: ``auto | cpu | cuda | cuda:N | mps`` -> a usable ``torch.device``.

Every place that takes a device name (a run's ``device``, ``supkd cka --device``, the Python
API's ``device=``) goes through :func:`resolve_device`, so a device this torch build or
machine cannot use is refused the same way everywhere, before any work: one
:class:`supkd.errors.ConfigError` line naming the field.
"""

from __future__ import annotations

import re
from typing import Any

from supkd.errors import ConfigError

__all__ = ["DEVICE_PATTERN", "resolve_device"]

#: Names a config may give (checked without torch by the config layer).
DEVICE_PATTERN = r"auto|cpu|cuda(:\d+)?|mps"


def resolve_device(name: Any = "auto", *, field: str = "config field 'device'") -> Any:
    """The ``torch.device`` for ``name`` (``auto``/None: CUDA when available, else CPU).

    ``field`` is how messages name where the value came from (``"cka --device"``).
    Raises ConfigError for a malformed name, CUDA when it is not available, a CUDA index
    beyond the visible GPUs, or MPS on a build or machine without it.
    """
    import torch

    if isinstance(name, torch.device):
        name = str(name)
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(name, str) or not re.fullmatch(DEVICE_PATTERN, name):
        raise ConfigError(f"{field}: expected auto, cpu, cuda, cuda:N or mps, got {name!r}")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"{field}: CUDA was asked for ({name}) but is not available here")
        count = torch.cuda.device_count()
        index = int(name.partition(":")[2] or 0)
        if index >= count:
            raise ConfigError(
                f"{field}: {name} asked for, but only {count} GPU(s) are visible "
                f"(cuda:0..cuda:{count - 1})"
            )
    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError(f"{field}: mps was asked for but this torch build or machine "
                              "has no Apple GPU (use cpu)")
    return torch.device(name)
