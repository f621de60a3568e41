"""Shared pieces of the test suite (not tests): tiny run configs, toy tasks and data, a
spawn of DDP ranks with its one retry, fake run directories written through supkd's own
``RunResult``/``RunDir``, and the location of supkd's own source (to tell its frames in a
traceback from anyone else's).

Import as ``from tests.helpers import ...`` (pytest puts the repository root on
``sys.path``: ``pythonpath`` in pyproject's pytest options).
"""

from tests.helpers.configs import TINY, TINY_RUN, tiny_config, write_cfg
from tests.helpers.frames import SUPKD_DIR, supkd_frames
from tests.helpers.runs import write_fake_result
from tests.helpers.spawn import spawn_ranks
from tests.helpers.tasks import ToyTask, toy_data, toy_loader

__all__ = [
    "SUPKD_DIR",
    "TINY",
    "TINY_RUN",
    "ToyTask",
    "spawn_ranks",
    "supkd_frames",
    "tiny_config",
    "toy_data",
    "toy_loader",
    "write_cfg",
    "write_fake_result",
]
