"""Segment files: the open, append-only form and the sealed Parquet form.

An archive directory holds numbered segments under ``segments/``:

``NNNNNNNNNNNN.arrows``   the open segment: an Arrow IPC *stream* (the schema
                          message, then one record-batch message per stored
                          batch), appended with plain ``write`` calls and
                          made durable with ``fsync``.  Each row carries its
                          own CRC-32, and the IPC framing gives every
                          message's length, so a torn tail (a crash inside a
                          write) or flipped bytes are detected on reading and
                          never taken for data.
``NNNNNNNNNNNN.parquet``  a sealed segment: the same rows in Parquet, written
                          to a temporary name, fsync-ed and renamed, so a
                          sealed segment is either complete or absent.

Sealing converts an ``.arrows`` file into the ``.parquet`` file with the same
number, then removes the ``.arrows`` file; a crash between the two leaves
both, and the Parquet file wins.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .schema import SCHEMA, ArchiveError

__all__ = ["OpenSegment", "ScanResult", "scan_stream", "seal", "segment_path", "list_segments", "fsync_dir", "ArchiveFull",
           "ROW_GROUP_BYTES", "PAGE_CHECKSUMS_KEY", "write_parquet_atomically"]

log = logging.getLogger(__name__)

DIGITS = 12
#: Target size of one Parquet row group: a reader holds one at a time.
ROW_GROUP_BYTES = 64 << 20
#: Schema metadata key saying a sealed segment carries Parquet page checksums.
PAGE_CHECKSUMS_KEY = b"qsense.page_checksums"
#: End-of-stream marker of the Arrow IPC stream format.
_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"
_FULL_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


class ArchiveFull(ArchiveError):
    """The archive cannot store a batch: disk full, file-size limit or the configured capacity."""


def segment_path(directory: Path, seg_id: int, sealed: bool) -> Path:
    return directory / f"{seg_id:0{DIGITS}d}.{'parquet' if sealed else 'arrows'}"


def list_segments(directory: Path) -> list[tuple[int, Path, bool]]:
    """``(id, path, sealed)`` of every segment, by id; a sealed file shadows an
    open one with the same number (a crash during sealing)."""
    found: dict[int, tuple[Path, bool]] = {}
    if not directory.is_dir():
        return []
    for p in directory.iterdir():
        stem, dot, ext = p.name.partition(".")
        if not stem.isdigit() or ext not in ("arrows", "parquet"):
            continue
        sid, sealed = int(stem), ext == "parquet"
        if sid in found and found[sid][1] and not sealed:
            continue
        found[sid] = (p, sealed)
    return [(sid, *found[sid]) for sid in sorted(found)]


def fsync_dir(directory: Path) -> None:
    """Make renames and new names in ``directory`` durable (where the filesystem allows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _io_error(exc: OSError, what: str) -> ArchiveError:
    if exc.errno in _FULL_ERRNOS:
        return ArchiveFull(f"{what}: {os.strerror(exc.errno)}")
    return ArchiveError(f"{what}: {exc}")


class OpenSegment:
    """The segment being appended to (one writer; not thread-safe)."""

    def __init__(self, path: Path, seg_id: int) -> None:
        self.path = path
        self.id = seg_id
        self.rows = 0
        self.created = time.monotonic()
        self.closed = False
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        except OSError as exc:
            raise _io_error(exc, f"cannot create segment {path}") from None
        self.size = 0
        self._write(SCHEMA.serialize().to_pybytes())
        fsync_dir(path.parent)

    def _write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        done = 0
        try:
            while done < len(view):
                done += os.write(self._fd, view[done:])
        except OSError as exc:
            # never leave half a message behind: a later append would follow garbage
            try:
                os.ftruncate(self._fd, self.size)
            except OSError:
                self.closed = True  # cannot repair: the writer must rotate to a new segment
            raise _io_error(exc, f"cannot write segment {self.path}") from None
        self.size += len(view)

    def append(self, message: bytes | memoryview, rows: int = 1) -> None:
        """Write one serialized record-batch message (in the page cache; :meth:`sync` makes it durable)."""
        if self.closed:
            raise ArchiveError(f"segment {self.path} is closed")
        self._write(message)
        self.rows += rows

    def mark(self) -> tuple[int, int]:
        """Where the segment ends now (for :meth:`rollback`)."""
        return self.size, self.rows

    def rollback(self, mark: tuple[int, int]) -> None:
        """Cut the segment back to ``mark`` (the messages of a failed multi-message append)."""
        try:
            os.ftruncate(self._fd, mark[0])
        except OSError:
            self.closed = True  # cannot repair: the writer rotates to a new segment
            return
        self.size, self.rows = mark

    def fileno(self) -> int:
        return self._fd

    def sync(self) -> None:
        try:
            os.fsync(self._fd)
        except OSError as exc:
            raise _io_error(exc, f"cannot fsync segment {self.path}") from None

    def close(self) -> None:
        """Write the end-of-stream marker, fsync and close."""
        if self._fd < 0:
            return
        try:
            if not self.closed:
                self._write(_EOS)
            os.fsync(self._fd)
        except (OSError, ArchiveError) as exc:
            log.warning("closing segment %s: %s", self.path, exc)
        finally:
            os.close(self._fd)
            self._fd = -1
            self.closed = True


@dataclass
class ScanResult:
    """The valid prefix of an ``.arrows`` file."""

    batches: list[pa.RecordBatch]
    valid_bytes: int
    total_bytes: int
    problem: str | None = None  # why reading stopped before the end

    @property
    def rows(self) -> int:
        return sum(b.num_rows for b in self.batches)


def scan_stream(path: Path) -> ScanResult:
    """Read an ``.arrows`` file message by message, stopping at the first bad one.

    A truncated or unparsable message ends the scan (``problem`` says where);
    everything before it is returned.  Row checksums are checked later, row by
    row, by :func:`~qsense.streaming.archive.schema.rows_to_entries`.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        return ScanResult([], 0, 0, f"cannot read: {exc}")
    buf = pa.py_buffer(data)
    reader = pa.BufferReader(buf)
    batches: list[pa.RecordBatch] = []
    try:
        msg = pa.ipc.read_message(reader)
        schema = pa.ipc.read_schema(msg)
    except Exception as exc:  # noqa: BLE001 -- pyarrow raises several types for garbage
        return ScanResult([], 0, len(data), f"no readable schema message at byte 0 ({type(exc).__name__}: {exc})")
    if not schema.equals(SCHEMA, check_metadata=False):
        return ScanResult([], 0, len(data), "schema differs from this qsense's archive schema")
    valid = reader.tell()
    while valid < len(data):
        if data[valid:valid + 8] == _EOS:
            valid += 8
            break
        try:
            msg = pa.ipc.read_message(reader)
            rb = pa.ipc.read_record_batch(msg, SCHEMA)
            rb.validate(full=True)
        except Exception as exc:  # noqa: BLE001
            return ScanResult(batches, valid, len(data), f"unreadable message at byte {valid} of {len(data)} "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
        batches.append(rb)
        valid = reader.tell()
    problem = None if valid == len(data) else f"{len(data) - valid} bytes after the end-of-stream marker"
    return ScanResult(batches, valid, len(data), problem)


def _row_group_rows(table: pa.Table) -> int:
    if table.num_rows == 0:
        return 1
    per_row = max(1, table.nbytes // table.num_rows)
    return max(1, ROW_GROUP_BYTES // per_row)


def write_parquet_atomically(table: pa.Table, target: Path, **options: object) -> None:
    """Write ``table`` to ``target`` as Parquet: a temporary name, fsync, rename, fsync of the
    directory -- so ``target`` is the old file or the complete new one, never a torn mixture."""
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        pq.write_table(table, tmp, **options)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def seal(table: pa.Table, target: Path, *, compression: str = "zstd") -> int:
    """Write ``table`` as the sealed Parquet segment ``target`` (atomically); returns its size.

    The packed planes are random bits (incompressible), so they are stored
    uncompressed; timestamps, waits and the string columns compress well.
    """
    comp = {name: ("none" if name == "planes" else compression) for name in SCHEMA.names}
    # page CRC-32s: readers verify them in C++ (the rows' own CRCs were checked before sealing)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), PAGE_CHECKSUMS_KEY: b"1"})
    try:
        write_parquet_atomically(table, target, compression=comp, row_group_size=_row_group_rows(table),
                                 use_dictionary=["kind", "source", "wires"], write_statistics=True, write_page_checksum=True)
    except OSError as exc:
        raise _io_error(exc, f"cannot seal segment {target}") from None
    return target.stat().st_size
