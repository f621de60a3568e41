"""Atomic writes: write to a temporary file in the same folder, fsync, then ``os.replace``.

A reader (or a resumed run) therefore sees either the old file or the complete new one,
never a half-written file, even if the process is killed mid-write (POSIX rename semantics).
A SIGKILL mid-write does leave the temporary file behind (``.NAME.<random>.tmp``, as large
as the file being written, e.g. a checkpoint); :func:`sweep_stale_temps` removes them.

File modes: ``tempfile.mkstemp`` creates its file with mode 0600 (private on purpose), and
the rename keeps that mode, so every file written here would be unreadable to the user's
group (teammates on shared storage could not load a teacher or read a report). The
temporary file is therefore given the mode a plain ``open(path, "w")`` would give,
``0o666 & ~umask``, before it is renamed into place (docs/design.md §8: files get the user's
umask).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Any

import yaml

# The names atomic_write_bytes gives its temporary files: tempfile.mkstemp with prefix
# ".NAME." and suffix ".tmp" inserts 8 characters from [a-z0-9_] (CPython's
# tempfile._RandomNameSequence).
_TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")



def is_temp_name(name: str) -> bool:
    """Whether ``name`` is that of a temporary file :func:`atomic_write_bytes` creates."""
    return _TEMP_NAME.fullmatch(name) is not None


_UMASK_LOCK = threading.Lock()
_UMASK_FALLBACK: list[int] = []  # read once, where /proc cannot tell


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows.

    Linux (>= 4.7) shows it in ``/proc/self/status`` (read on every call: cheap, and right
    after a later ``os.umask``). Elsewhere the only way is to set it and set it back
    (``os.umask`` returns the old value); that is done once, under a lock, since another
    thread creating a file in between would get the temporary mask.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        if not _UMASK_FALLBACK:
            old = os.umask(0o077)
            os.umask(old)
            _UMASK_FALLBACK.append(old)
        return _UMASK_FALLBACK[0]


def file_mode() -> int:
    """The mode a new file gets from ``open(path, "w")``: ``0o666 & ~umask``."""
    return 0o666 & ~current_umask()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; create parent folders. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # Some network file systems refuse chmod; the file is then as private as mkstemp made
        # it, which is safe, so that is not an error.
        with contextlib.suppress(OSError):
            os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_yaml(path: str | os.PathLike[str], obj: Any) -> Path:
    return atomic_write_text(path, yaml.safe_dump(obj, sort_keys=False))


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` through an in-memory buffer, then an atomic write."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def append_jsonl(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Append one JSON line and fsync. A crash can at worst leave a partial *last* line,
    which :func:`read_jsonl` skips."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, sort_keys=True, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a JSON-lines file, skipping a truncated trailing line."""
    out: list[dict[str, Any]] = []
    p = Path(path)
    if not p.exists():
        return out
    for line in p.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def sweep_stale_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files that interrupted atomic writes left in ``folder`` and in
    ``folder/checkpoints``; return the removed paths.

    Only names of the form ``.NAME.<random>.tmp`` (what :func:`atomic_write_bytes` creates)
    are removed; other files and sub-folders are left alone. Call it only on a folder that
    no other process is writing to at the time (e.g. a run directory when its run starts):
    a write in progress has a temporary file of the same form.
    """
    removed: list[Path] = []
    base = Path(folder)
    for d in (base, base / "checkpoints"):
        if not d.is_dir():
            continue
        for entry in d.iterdir():
            if _TEMP_NAME.fullmatch(entry.name) and entry.is_file() and not entry.is_symlink():
                try:
                    entry.unlink()
                except FileNotFoundError:
                    continue
                removed.append(entry)
    return sorted(removed)
