"""Which files of an output folder supkd wrote: the one rule for ``--out`` of every command.

``supkd cka --out DIR``, ``supkd report --out DIR`` and the report of ``supkd grid`` write
files of fixed names (``cka.json``, ``report.md``, ``runs.csv``, ...) into a folder the user
names, which may already hold files of the user's own. The rule: supkd replaces a file only
when it wrote that file itself, and refuses with one line, before writing anything, where a
file of the same name is someone else's. (Run folders have their own rule, in
:meth:`supkd.train.run_dir.RunDir.claim`.)

What supkd wrote is recorded in the folder itself, in :data:`MANIFEST_NAME` (a small JSON
file, written atomically after the files it lists): each file's name with the SHA-256 of
the bytes supkd wrote. A file is supkd's when it is listed with the hash it has now; a file
that is not listed (the user's), or that changed since (the user edited supkd's output), is
left alone and named in the refusal. The folder is created only when the work starts
(:meth:`OutputFolder.create`); before that :meth:`OutputFolder.check` finds out, creating
nothing, whether it could be, so a refused command leaves no empty folder chain behind.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from supkd.errors import UserError
from supkd.utils.atomic import atomic_write_json
from supkd.utils.paths import _blocking_file, prepare_output_dir, writable_problem

__all__ = ["MANIFEST_NAME", "OutputFolder"]

#: The record of what supkd wrote in an output folder.
MANIFEST_NAME = ".supkd-written.json"
_FORMAT = "supkd-written-files"


def _sha256(path: Path) -> str | None:
    try:
        with path.open("rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


class OutputFolder:
    """An output folder of a command: ``what`` names it in messages (``cka --out``)."""

    def __init__(self, path: str | os.PathLike[str], what: str, *, hint: str = "") -> None:
        self.path, self.what = Path(path), what
        self.hint = f"; {hint}" if hint else ""

    @property
    def manifest(self) -> Path:
        return self.path / MANIFEST_NAME

    def written(self) -> dict[str, str]:
        """name -> SHA-256 of each file supkd recorded here ({} when none, or unreadable)."""
        try:
            data = json.loads(self.manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        files = data.get("files") if isinstance(data, dict) else None
        if not isinstance(files, dict):
            return {}
        return {str(k): str(v) for k, v in files.items() if isinstance(v, str)}

    def check(self) -> Path:
        """UserError unless the folder exists and is writable or could be created; creates
        nothing (call :meth:`create` when the work starts)."""
        blocker = _blocking_file(self.path)
        if blocker == self.path:
            raise UserError(f"{self.what} {self.path}: exists and is not a folder{self.hint}")
        if blocker is not None:
            raise UserError(f"{self.what} {self.path}: cannot be created under the file "
                            f"{blocker}{self.hint}")
        existing = next(p for p in (self.path, *self.path.parents) if p.exists() or p == p.parent)
        problem = writable_problem(existing) if existing.exists() else "no such folder"
        if problem is not None:
            verb = "written" if existing == self.path else "created"
            raise UserError(f"{self.what} {self.path}: cannot be {verb} ({problem}){self.hint}")
        return self.path

    def claim(self, names: Iterable[str]) -> None:
        """UserError, before anything is written, when a file of one of ``names`` is in the
        folder and is not one supkd wrote there (or was changed since)."""
        if not self.path.is_dir():
            return
        ours = self.written()
        for name in names:
            target = self.path / name
            if not (target.exists() or target.is_symlink()):
                continue
            if target.is_symlink() or not target.is_file():
                why = "is not a file supkd wrote"
            elif name not in ours:
                why = f"is not a file supkd wrote (not listed in {MANIFEST_NAME})"
            elif _sha256(target) != ours[name]:
                why = "was changed since supkd wrote it"
            else:
                continue
            raise UserError(f"{self.what} {self.path}: {name} {why}, so it is left as it is; "
                            "move it away or choose another folder")

    def create(self) -> Path:
        """Create the folder (with its parents) when the work starts; UserError when it
        cannot be created or written."""
        return prepare_output_dir(self.path, self.what, hint=self.hint.removeprefix("; "))

    def record(self, paths: Iterable[str | os.PathLike[str]]) -> None:
        """Add the files ``paths`` (in this folder) that supkd has just written to the
        manifest, with their hashes."""
        files = self.written()
        root = self.path.resolve()
        for p in paths:
            path = Path(p)
            try:
                name = path.resolve().relative_to(root).as_posix()
            except ValueError:
                continue  # outside this folder: not this folder's business
            digest = _sha256(path)
            if digest is not None:
                files[name] = digest
        atomic_write_json(self.manifest, {"format": _FORMAT, "files": dict(sorted(files.items()))})
