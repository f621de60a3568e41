"""Stop requests: SIGINT/SIGTERM during training, and when DDP ranks agree on them.

The first SIGINT (Ctrl-C) or SIGTERM asks the loop to finish its step, checkpoint and stop;
a second one exits at once. Under DDP a signal reaches the ranks at different steps (or only
one rank), so the loop combines the ranks' stop flags at steps :func:`stop_check_due` names.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

__all__ = ["StopSignals", "stop_check_due"]


class StopSignals:
    """First SIGINT/SIGTERM: ask the loop to checkpoint and stop. Second: stop at once.

    ``requested`` is the first signal's name (``"SIGTERM"``), or None. With ``install=False``
    no handler is installed and ``requested`` stays None.
    """

    def __init__(self, quiet: bool, install: bool = True) -> None:
        self.requested: str | None = None
        self.quiet = quiet
        self.install = install
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.requested is not None:
            raise KeyboardInterrupt(f"second {name}")
        self.requested = name
        if not self.quiet:
            print(
                f"\nsupkd: {name} received, saving a checkpoint after this step "
                "(send it again to quit at once)",
                file=sys.stderr,
                flush=True,
            )

    def __enter__(self) -> StopSignals:
        # Handlers can only be installed from the main thread (e.g. not under a grid's
        # worker thread); elsewhere the default behaviour stays.
        if self.install and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


def stop_check_due(step: int, epoch_end: bool, log_every: int, cuda: bool) -> bool:
    """Whether the DDP ranks combine their stop flags after optimizer step ``step``.

    Depends only on values every rank shares, so all ranks take part in the same
    all-reduces. CPU: every step (the read is free). CUDA: every ``log_every`` steps and at
    each epoch's end, so a stop request costs no extra host sync per step.
    """
    return not cuda or epoch_end or step % log_every == 0
