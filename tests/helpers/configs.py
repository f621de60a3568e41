"""The tiny runs of the suite: digits at 8x8 pixels, a width-4 ResNet-18, about a second of
training on one CPU core.

``TINY`` is the run as ``key=value`` overrides (``supkd train CONFIG ...`` style, or
:func:`tiny_config`); ``TINY_RUN`` is a one-step run as a config mapping, for the YAML files
the CLI tests write (:func:`write_cfg`).
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from supkd.config import Config

TINY = [
    "data.name=digits",
    "data.image_size=8",
    "data.subset=96",
    "data.val_fraction=0.2",
    "data.num_workers=0",
    "model.width=4",
    "train.batch_size=32",
    "train.eval_batch_size=256",
    "train.epochs=1",
    "train.progress=false",
    "optim.lr=0.05",
]

TINY_RUN = {
    "name": "tiny",
    "device": "cpu",
    "data": {"name": "digits", "subset": 64, "num_workers": 0},
    "model": {"name": "resnet18", "width": 4},
    "train": {"epochs": 1, "batch_size": 16, "eval_batch_size": 64, "steps_per_epoch": 1,
              "progress": False},
}


def tiny_config(*overrides: str) -> Config:
    """The resolved :data:`TINY` run config with ``overrides`` applied after it."""
    from supkd.train.checks import load_run_config

    return load_run_config({"name": "tiny"}, [*TINY, *overrides])


def write_cfg(path: Path, **sections: object) -> Path:
    """:data:`TINY_RUN` with ``sections`` merged in (a dict updates its section, anything
    else replaces it), written to ``path`` as YAML."""
    cfg = json.loads(json.dumps(TINY_RUN))
    for key, value in sections.items():
        if isinstance(value, dict):
            cfg.setdefault(key, {}).update(value)
        else:
            cfg[key] = value
    path.write_text(yaml.safe_dump(cfg))
    return path
