"""The archive's manifest (``archive.json``) and its writer lock (``.lock``).

``archive.json`` names the format and its version, so a reader refuses a
directory that is not an archive, or one written by a newer qsense, with a
clear message instead of misreading it.  ``.lock`` is held (``flock``,
exclusive) by the one writer: a second writer is refused, and a reader can
tell a live archive (its open segment may end mid-write) from one left by a
crash (a torn tail there is damage, and counted).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

from .schema import FORMAT, FORMAT_VERSION, ArchiveError
from .segments import fsync_dir

__all__ = ["MANIFEST", "LOCK", "SEGMENTS", "INDEX", "read_manifest", "create_manifest", "WriterLock", "is_live"]

MANIFEST = "archive.json"
LOCK = ".lock"
SEGMENTS = "segments"
INDEX = "index.parquet"


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of the archive at ``path``; :class:`ArchiveError` if it is not one this build can read."""
    if not path.exists():
        raise ArchiveError(f"{path}: no such archive")
    if not path.is_dir():
        raise ArchiveError(f"{path}: not a qsense archive (an archive is a directory)")
    mf = path / MANIFEST
    try:
        data = json.loads(mf.read_text())
    except FileNotFoundError:
        raise ArchiveError(f"{path}: not a qsense archive (no {MANIFEST})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArchiveError(f"{path}: unreadable {MANIFEST}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ArchiveError(f"{path}: {MANIFEST} is not a {FORMAT} manifest")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ArchiveError(f"{path}: {MANIFEST} has no integer version")
    if version > FORMAT_VERSION:
        raise ArchiveError(f"{path}: archive format version {version} is newer than this qsense reads ({FORMAT_VERSION}); "
                           "upgrade qsense")
    if version < 1:
        raise ArchiveError(f"{path}: invalid archive format version {version}")
    return data


def create_manifest(path: Path) -> dict[str, Any]:
    """Make ``path`` an archive (it must be absent or an empty directory)."""
    if path.exists() and not path.is_dir():
        raise ArchiveError(f"{path}: exists and is not a directory")
    if path.is_dir() and any(path.iterdir()):
        raise ArchiveError(f"{path}: exists, is not empty and is not a qsense archive (no {MANIFEST}); refusing to write into it")
    try:
        path.mkdir(parents=True, exist_ok=True)
        (path / SEGMENTS).mkdir(exist_ok=True)
        data = {"format": FORMAT, "version": FORMAT_VERSION, "created": time.time(),
                "schema": "docs/archive.md", "layout": "one row per record batch; segments/*.parquet sealed, *.arrows open"}
        tmp = path / f".{MANIFEST}.tmp"
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path / MANIFEST)
        fsync_dir(path)
    except OSError as exc:
        raise ArchiveError(f"{path}: cannot create archive: {exc}") from None
    return data


class WriterLock:
    """The exclusive writer lock of an archive, held until :meth:`release`."""

    def __init__(self, path: Path) -> None:
        self.path = path / LOCK
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ArchiveError(f"{path}: cannot open the writer lock: {exc}") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = ""
            try:
                holder = os.pread(self._fd, 64, 0).decode(errors="replace").strip()
            except OSError:
                pass
            os.close(self._fd)
            raise ArchiveError(f"{path}: archive is in use by another writer{f' (pid {holder})' if holder else ''}") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1


def is_live(path: Path) -> bool:
    """Whether a writer holds the archive's lock right now."""
    try:
        fd = os.open(path / LOCK, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
