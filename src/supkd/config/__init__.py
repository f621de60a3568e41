"""Configuration, the lowest floor: typed sections, the one YAML reader, overrides.

- :mod:`supkd.config.typed`: the generic typed loader (``Section`` dataclasses that check
  their fields, ``bounded`` ranges, closest-key suggestions); it knows no section.
- :mod:`supkd.config.yamlio`: the one YAML reader (``extends``), the one merge rule and
  dotted ``key=value`` overrides, shared by run configs and grid specs.
- :mod:`supkd.config.schema`: the sections of a run config and :func:`load_config`.

Nothing here imports torch or any other supkd layer but ``errors`` and ``utils``.
"""

from supkd.config.schema import (
    TASK_SECTIONS,
    Config,
    DataConfig,
    ModelConfig,
    OptimConfig,
    ScheduleConfig,
    TaskConfig,
    TrainConfig,
    WandbConfig,
    config_from_dict,
    load_config,
)
from supkd.config.typed import Section, bounded, check_range, to_plain
from supkd.config.yamlio import apply_overrides, merge, parse_overrides, read_yaml

__all__ = [
    "TASK_SECTIONS",
    "Config",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "ScheduleConfig",
    "Section",
    "TaskConfig",
    "TrainConfig",
    "WandbConfig",
    "apply_overrides",
    "bounded",
    "check_range",
    "config_from_dict",
    "load_config",
    "merge",
    "parse_overrides",
    "read_yaml",
    "to_plain",
]
