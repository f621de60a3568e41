"""Helpers of the refusal catalogue (test_refusals.py): run ``supkd`` in process, check the
exit code and the one stderr line, and check that nothing was written where it must not be.

Not a test module: imported by the catalogue's test files.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from tests.helpers import TINY_RUN, write_cfg  # noqa: F401 (write_cfg: for the catalogue tests)

from supkd.cli import main

# A tiny digits run (a width-4 ResNet-18 for one step) and its YAML writer, shared with the
# rest of the suite.
TINY = TINY_RUN


def snapshot(*roots: Path) -> dict[str, tuple[int, int, int]]:
    """Every file and folder under ``roots``: path -> (size, mtime_ns, mode)."""
    out: dict[str, tuple[int, int, int]] = {}
    for root in roots:
        if not root.exists():
            continue
        for p in [root, *root.rglob("*")]:
            st = p.lstat()
            out[str(p)] = (st.st_size if p.is_file() else 0, st.st_mtime_ns if p.is_file() else 0,
                           st.st_mode)
    return out


def changes(before: dict, after: dict, allowed: Sequence[Path] = ()) -> list[str]:
    """Paths added, removed or modified between two snapshots, outside ``allowed`` folders."""
    keep = [str(a) for a in allowed]
    diff = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
    return sorted(p for p in diff
                  if not any(p == a or p.startswith(a + os.sep) for a in keep))


def run_cli(capsys, argv: list[str]) -> tuple[int, list[str], str]:
    """(exit code, non-empty stderr lines, stdout) of ``supkd ARGV`` run in this process;
    argparse's own exits (SystemExit) count as their code."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    assert "Traceback" not in out.err, out.err
    return code, [ln for ln in out.err.splitlines() if ln.strip()], out.out


def refused(capsys, argv: list[str], *needles: str, watch: Sequence[Path] = (),
            allowed: Sequence[Path] = (), code: int = 2, usage: bool = False) -> str:
    """Run ``supkd ARGV``: exit ``code``, one stderr error line naming every needle (after
    argparse's usage lines when ``usage``), and no file under ``watch`` added, removed or
    changed outside ``allowed``. Returns the error line."""
    before = snapshot(*watch)
    got, lines, _ = run_cli(capsys, argv)
    assert got == code, f"exit {got}, stderr {lines}"
    if usage:
        assert lines and lines[0].startswith("usage:"), lines
        lines = [ln for ln in lines if "error:" in ln]
    assert len(lines) == 1, lines
    for n in needles:
        assert n in lines[0], f"{n!r} not named in {lines[0]!r}"
    written = changes(before, snapshot(*watch), allowed)
    assert not written, f"written where it must not be: {written}"
    return lines[0]


def warned(capsys, argv: list[str], *needles: str, code: int = 0) -> str:
    """Run ``supkd ARGV``: exit ``code`` and exactly one ``warning:`` line on stderr, naming
    every needle. Returns that line."""
    got, lines, _ = run_cli(capsys, argv)
    assert got == code, f"exit {got}, stderr {lines}"
    warnings_ = [ln for ln in lines if ": warning: " in ln]
    assert len(warnings_) == 1, lines
    for n in needles:
        assert n in warnings_[0], f"{n!r} not named in {warnings_[0]!r}"
    return warnings_[0]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


_CAP_VERSION_3 = 0x20080522  # linux/capability.h: _LINUX_CAPABILITY_VERSION_3
_CAP_DAC = (1 << 1) | (1 << 2)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH


@contextlib.contextmanager
def unprivileged() -> Iterator[None]:
    """Run the block with file permission bits applying to this process, so that a
    read-only folder is read-only: root passes them through CAP_DAC_OVERRIDE. As root those
    two capabilities are dropped from the thread's effective set and restored afterwards
    (they stay permitted); the user stays root, so the Python installation under /root
    stays readable. As any other user nothing changes."""
    if os.geteuid() != 0:
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    header, data = _CapHeader(_CAP_VERSION_3, 0), (_CapData * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:  # pragma: no cover
        pytest.skip("cannot read the process's capabilities")
    saved = data[0].effective
    data[0].effective = saved & ~_CAP_DAC
    if libc.capset(ctypes.byref(header), data) != 0:  # pragma: no cover
        pytest.skip("cannot drop CAP_DAC_OVERRIDE to test a read-only folder")
    try:
        yield
    finally:
        data[0].effective = saved
        libc.capset(ctypes.byref(header), data)


def read_only(path: Path) -> Path:
    """Make a folder and everything under it read-only (r-x for folders, r-- for files)."""
    for p in sorted([path, *path.rglob("*")], key=lambda q: len(q.parts), reverse=True):
        p.chmod(0o555 if p.is_dir() else 0o444)
    return path
