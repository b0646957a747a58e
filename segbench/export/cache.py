"""Content-addressed cache for exported graphs and engines, with atomic writes.

An artifact is stored under a key that hashes everything that decides its bytes (model and options,
weights digest, opset, exporter, dynamic axes, precision, library versions...). A second export with the
same key reuses the file; any change of those inputs gives a new key and a rebuild. Entries appear by an
atomic rename only once they are complete, so an export killed half-way never leaves a file that a later
run would trust. Temporary files and directories are created with the modes any new file gets (0644 and
0755 under umask 022), not ``tempfile``'s private 0600 / 0700, since the rename keeps them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from segbench.files import temporary_name

META_FILE = "meta.json"


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in chunks (engines and graphs can be gigabytes)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def state_dict_digest(state_dict: Mapping[str, Any]) -> str:
    """SHA-256 over a state dict's names, dtypes, shapes and values: the same weights give the same
    digest whatever file (or seed) they came from."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        # Hash the raw bytes through a uint8 view: numpy has no bfloat16, a byte view works for every dtype.
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def new_file_mode(directory: str | Path) -> int:
    """The permission bits a new file gets in ``directory`` (0o666 less the umask), read from a probe
    file: for files that a library creates privately (onnx writes external data 0600) before the rename.
    (``os.umask`` can only be read by setting it, which races with other threads creating files.)"""
    probe = temporary_name(Path(directory) / "mode", ".probe")
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        return stat.S_IMODE(os.fstat(fd).st_mode)
    finally:
        os.close(fd)
        probe.unlink()


@contextmanager
def atomic_directory(final: str | Path) -> Iterator[Path]:
    """Yield a temporary directory next to ``final``; rename it to ``final`` when the block succeeds.

    When the block raises (or the process dies), ``final`` does not appear and the temporary directory
    is removed (or left under a dot-name that no lookup reads). When another process completed ``final``
    first, its entry is kept and this one is discarded: both hold the same content by construction. An
    entry without its metadata file is incomplete and is replaced.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(final)
    tmp.mkdir()  # mode 0o777 masked by the umask (mkdtemp's 0o700 would survive the rename)
    try:
        yield tmp
        try:
            os.rename(tmp, final)
        except OSError:
            if (final / META_FILE).is_file():
                return  # completed by someone else: keep theirs
            # An incomplete entry (e.g. its metadata was removed by hand) is replaced, never trusted.
            shutil.rmtree(final)
            os.rename(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def read_entry(entry: Path) -> dict[str, Any] | None:
    """The metadata of a complete cache entry, or None when there is no (complete, readable) entry."""
    try:
        return json.loads((entry / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_meta(directory: Path, meta: Mapping[str, Any]) -> None:
    (directory / META_FILE).write_text(json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8")
