"""Names that become paths, and output folders: the one rule for each.

Several values a user writes end up as a folder name: a run config's ``name`` (``supkd
train`` writes to ``runs/<name>`` without ``--out``), a grid's ``grid:`` name (its default
runs folder), the grid's cell and run names (``RUNS/<run>``). :func:`check_path_name` is the
one check all of them go through, so that no such value can point outside the folder the
user named (docs/design.md §8: nothing is written outside it).

:func:`prepare_output_dir` is the one check of a folder a command writes into (``supkd cka
--out``, ``supkd report --out``, the teacher cache): it exists or can be created, it is a
folder, and a file can be written there, all found out *before* the work starts, each a
one-line :class:`~supkd.errors.UserError`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from supkd.errors import ConfigError, UserError

__all__ = ["MAX_NAME_BYTES", "check_path_name", "prepare_output_dir", "writable_problem"]

#: The longest file name POSIX file systems take (NAME_MAX of ext4, xfs, btrfs, NFS).
MAX_NAME_BYTES = 255


def check_path_name(name: object, field: str) -> str:
    """``name`` when it is safe as one folder name; else ConfigError naming ``field``.

    Refused: a non-string or empty name, ``.`` and ``..``, any ``/`` or ``\\`` (an absolute
    path or one with separators: a name is one path component, and ``\\`` separates them on
    Windows), control characters (a NUL byte cannot be in a path at all; a newline breaks
    every listing), and names longer than :data:`MAX_NAME_BYTES` bytes in UTF-8.
    """
    shown = repr(name) if len(repr(name)) <= 60 else repr(name)[:57] + "..."
    where = f"config field '{field}'" if " " not in field else field
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: expected a non-empty name, got {shown}")
    if "/" in name or "\\" in name:
        raise ConfigError(
            f"{where}: expected a name, not a path (no '/' or '\\'), got {shown}; "
            "choose the folder with --out"
        )
    if name in (".", ".."):
        raise ConfigError(f"{where}: expected a name, got {shown} (a path to another folder)")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ConfigError(f"{where}: expected a name without control characters, got {shown}")
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise ConfigError(
            f"{where}: expected a name of at most {MAX_NAME_BYTES} bytes (the file system's "
            f"limit), got {len(name.encode('utf-8', 'surrogateescape'))}"
        )
    return name


def _blocking_file(path: Path) -> Path | None:
    """The first ancestor of ``path`` (or ``path`` itself) that exists and is not a folder."""
    for p in (path, *path.parents):
        if p.exists():
            return None if p.is_dir() else p
    return None


def writable_problem(folder: Path) -> str | None:
    """Why a file cannot be created in the existing ``folder`` (None: it can).

    Tried for real, with a temporary file removed at once: ``os.access`` answers for the
    real user id (root passes everything) and knows nothing of read-only mounts or ACLs.
    """
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".supkd-write-test.", suffix=".tmp")
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(tmp)
    return None


def prepare_output_dir(path: str | os.PathLike[str], what: str, *, hint: str = "") -> Path:
    """Create the output folder ``path`` (with its parents) and check a file can be written
    in it; UserError ``"<what> <path>: ..."`` (plus ``hint``) when it cannot.

    Call it before the work whose results go there, so that a bad folder costs nothing.
    """
    out = Path(path)
    suffix = f"; {hint}" if hint else ""
    blocker = _blocking_file(out)
    if blocker == out:
        raise UserError(f"{what} {out}: exists and is not a folder{suffix}")
    if blocker is not None:
        raise UserError(f"{what} {out}: cannot be created under the file {blocker}{suffix}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise UserError(f"{what} {out}: cannot be created ({why}){suffix}") from None
    problem = writable_problem(out)
    if problem is not None:
        raise UserError(f"{what} {out}: cannot be written ({problem}){suffix}")
    return out
