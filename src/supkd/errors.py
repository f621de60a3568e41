"""Error types shared by the library and the CLI.

A :class:`UserError` is something the user can fix (a bad config key, a missing file, a
checkpoint of the wrong architecture). The CLI prints its message as one line and exits with
code 2, with no traceback. Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input.

    The message names the field or file and what was expected.
    """

    exit_code = 2


class ConfigError(UserError, ValueError):
    """A bad configuration field (unknown key, wrong type, value out of range)."""


class DataError(UserError):
    """Missing, empty or corrupt data (folder, npz pack, image file, labels out of range)."""


class CheckpointError(UserError):
    """A checkpoint or run directory that is missing, truncated or of another architecture."""


class RunDiverged(Exception):  # noqa: N818 (a signal, not an error: public name)
    """Raised inside the engine when the loss becomes NaN/Inf; carries the global step."""

    def __init__(self, step: int, value: float) -> None:
        super().__init__(f"loss became non-finite ({value}) at step {step}")
        self.step = step
        self.value = value


class SupkdWarning(UserWarning):
    """A result that would mislead without a word: supkd goes on, and says why once.

    Raised with ``warnings.warn(message, SupkdWarning)``: one line naming the field, file or
    run and what is odd (a teacher that never finished, CKA across data sets, a single class,
    SupCon batches without positives, a warm-up longer than the run, unreadable runs in a
    report). The CLI prints each distinct message once, as ``supkd CMD: warning: MESSAGE``
    on stderr; library users get ordinary Python warnings they can filter by this class.
    """
