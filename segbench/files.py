"""Atomic file writes, the one implementation every writer of segbench uses (results, reports, the
export and engine caches, the synthetic dataset's annotations): readers never see half a file."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def temporary_name(final: Path, suffix: str = "") -> Path:
    """A fresh dot-name beside ``final`` (no lookup reads dot-names): creating it exclusively never
    clashes with another writer."""
    return final.with_name(f".{final.name}-{secrets.token_hex(8)}{suffix}")


def atomic_write_bytes(path: str | Path, data: bytes, make_parents: bool = True) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same directory, fsync'd, and a rename;
    the file gets the permissions the umask gives any new file. Missing directories are created unless
    ``make_parents`` is false."""
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path, ".tmp")
    # Mode 0o666 masked by the umask, as open() would; mkstemp's 0o600 would survive the rename.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8, into a directory that must exist (a mistyped
    output path is an error, not a new directory)."""
    return atomic_write_bytes(path, text.encode("utf-8"), make_parents=False)
