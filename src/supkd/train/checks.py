"""Loading and checking a run config with everything the layers above ``supkd.config`` know.

``supkd.config`` types and range-checks every field but knows no data set, model or loss by
name (it is the lowest floor). :func:`check_config` asks the layers that own those names,
without loading data or building networks, so that ``supkd train`` and ``supkd grid
--dry-run`` refuse a bad config before any work starts. ``supkd.train.run`` calls it first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import supkd.train.tasks  # noqa: F401  (registers the tasks' config sections)
from supkd.config import Config, load_config
from supkd.data import check_data_config
from supkd.errors import ConfigError
from supkd.models.registry import find_model_builder

__all__ = ["check_config", "load_run_config"]


def check_config(cfg: Config) -> Config:
    """Raise ConfigError naming the first field whose value no layer accepts; return ``cfg``.

    The task section was already typed (and its own names, e.g. ``task.loss``, checked) by
    its registered ``Config`` class when the config was loaded.
    """
    check_data_config(cfg.data)
    try:
        find_model_builder(cfg.model.name)  # a registered name, or one of a family's (timm/...)
    except ValueError as exc:
        raise ConfigError(f"config field 'model.name': {exc}") from None
    return cfg


def load_run_config(
    source: str | Path | Mapping[str, Any] | Config, overrides: Sequence[str] | None = None
) -> Config:
    """:func:`supkd.config.load_config` with the task sections registered, then
    :func:`check_config`: a run config every layer accepts, or ConfigError."""
    return check_config(load_config(source, overrides))
