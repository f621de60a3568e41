"""One process at a time in a run folder: an advisory lock held while a run trains there.

Two ``supkd train`` into one ``--out`` would both train and append every epoch to the same
``metrics.jsonl``; a second ``supkd grid`` on a runs folder would take the first one's live
run for an interrupted one and clear it. So the process that trains in a run folder holds
an exclusive ``flock`` on ``RUN/.supkd.lock`` until the run ends, and every other process
is refused at once (:func:`acquire`) or skips the run (:func:`holder`), naming the holder.

Why ``flock`` on an open file: the kernel drops the lock when the process dies, however it
dies (SIGKILL, OOM, a node reboot for NFS's lock manager), so a killed run never leaves a
stale lock that a user would have to delete by hand. A PID file alone cannot tell a live
holder from a dead one on another host. The file's content (``pid``, ``host``, ``since``)
only names the holder in messages; the lock itself is the kernel's. On Linux NFS clients
``flock`` is carried out as a POSIX byte-range lock, so it also holds across the hosts
of a cluster that share the runs folder.

The lock file is never removed: unlinking it while another process has it open would let
two processes hold locks on two different files of the same name. It is an empty-looking
dot file of a few bytes that :class:`supkd.train.run_dir.RunDir` counts as its own.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from supkd.errors import UserError

__all__ = ["LOCK_NAME", "acquire", "describe", "holder", "release"]

#: The lock file in a run folder.
LOCK_NAME = ".supkd.lock"

# Run folders this process holds: resolved path -> (open fd, hold count).
_HELD: dict[str, tuple[int, int]] = {}


def _key(run_dir: str | os.PathLike[str]) -> str:
    return str(Path(run_dir).resolve())


def describe(info: dict[str, object] | None) -> str:
    """``pid 123 on host node7`` (what a lock file says of its holder)."""
    if not info:
        return "another process (it has not written its pid yet)"
    return f"pid {info.get('pid', '?')} on host {info.get('host', '?')}"


def _read_info(fd_or_path: int | Path) -> dict[str, object] | None:
    try:
        if isinstance(fd_or_path, int):
            os.lseek(fd_or_path, 0, os.SEEK_SET)
            text = os.read(fd_or_path, 4096).decode("utf-8", "replace")
        else:
            text = fd_or_path.read_text(encoding="utf-8", errors="replace")
        info = json.loads(text)
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def acquire(run_dir: str | os.PathLike[str], *, what: str = "run directory") -> None:
    """Hold ``run_dir`` for this process (creating the folder and its lock file), or raise
    UserError at once, naming the process that holds it. Held again by the same process:
    counted, released by as many :func:`release` calls."""
    key = _key(run_dir)
    if key in _HELD:
        fd, count = _HELD[key]
        _HELD[key] = (fd, count + 1)
        return
    folder = Path(run_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise UserError(f"{what} {folder}: cannot be written "
                        f"({exc.strerror or type(exc).__name__})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        info = _read_info(fd)
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise UserError(f"{what} {folder}: cannot be locked ({exc.strerror})") from None
        since = info.get("since") if info else None
        started = f", training since {since}" if since else ""
        raise UserError(f"{what} {folder}: is in use by {describe(info)}{started}; wait for "
                        "it to end or choose another --out") from None
    record = {"pid": os.getpid(), "host": socket.gethostname(),
              "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    with contextlib.suppress(OSError):  # the name is a courtesy; the lock is the kernel's
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
    _HELD[key] = (fd, 1)


def release(run_dir: str | os.PathLike[str]) -> None:
    """Let ``run_dir`` go (no-op when this process does not hold it)."""
    key = _key(run_dir)
    if key not in _HELD:
        return
    fd, count = _HELD.pop(key)
    if count > 1:
        _HELD[key] = (fd, count - 1)
        return
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
    os.close(fd)  # closing the last descriptor drops the flock


def holder(run_dir: str | os.PathLike[str]) -> dict[str, object] | None:
    """Who holds ``run_dir`` (``{"pid", "host", "since"}``, ``{}`` when the holder has not
    written its name yet), or None when no other process holds it. Creates nothing."""
    if _key(run_dir) in _HELD:
        return None
    path = Path(run_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None  # no lock file: nobody ever trained here
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return _read_info(fd) or {}
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
