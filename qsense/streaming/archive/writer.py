"""Appending to an archive: durable writes, rotation, sealing, retention, recovery.

:class:`ArchiveWriter` is used by one process at a time (an exclusive lock on
``ARCHIVE/.lock``).  Its life cycle:

* **open**: create the archive or check its manifest; take the lock; recover
  from a crash -- every leftover open segment is scanned, its torn tail or
  corrupt rows are reported (log line and :attr:`ArchiveWriter.problems`)
  and dropped, and its valid rows are sealed; the index is loaded (or rebuilt
  from the segments);
* **append** (:meth:`~ArchiveWriter.append_many`): one Arrow IPC message per
  call, written to the open segment (page cache);
* **sync**: ``fsync``; only then is a batch *durable*
  (:attr:`~ArchiveWriter.durable_pos`), and only durable batches may be
  acknowledged or folded into estimators;
* **rotation**: a segment past ``segment_bytes`` or ``segment_seconds`` is
  closed and queued for sealing; :meth:`~ArchiveWriter.seal_pending` (safe
  to run in a worker thread while appends go on) turns it into Parquet,
  updates ``index.parquet`` and applies retention;
* **retention** by bytes and by age deletes the oldest sealed segments, but
  never one holding positions after :attr:`~ArchiveWriter.protect_pos` (the
  daemon sets it to its last checkpoint: replay needs them).

A failed write (disk full, file-size limit, the configured ``capacity_bytes``)
raises :class:`~qsense.streaming.archive.segments.ArchiveFull` and leaves the
segment exactly as it was before the call.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from pathlib import Path
from typing import Sequence, Union

import pyarrow as pa
import pyarrow.parquet as pq

from qsense.records import BellBatch, ShadowBatch

from .index import RunIndex
from .manifest import INDEX, MANIFEST, SEGMENTS, WriterLock, create_manifest, read_manifest
from .schema import SCHEMA, ArchiveError, RowProblem, batch_row, rows_to_entries, rows_to_record_batch
from .segments import (
    ArchiveFull,
    OpenSegment,
    fsync_dir,
    list_segments,
    scan_stream,
    seal,
    segment_path,
    write_parquet_atomically,
)

__all__ = ["ArchiveWriter", "index_rows"]

log = logging.getLogger(__name__)

Batch = Union[ShadowBatch, BellBatch]

#: Largest Arrow IPC message the writer builds (a commit group is split into several).
MESSAGE_BYTES = 8 << 20
#: Problem categories counted by writers and readers.
PROBLEMS = ("torn_tail", "checksum", "invalid", "unreadable_segment", "unreadable_row_group", "missing_segment")


def index_rows(index: RunIndex, seg_id: int, table: pa.Table | pa.RecordBatch) -> None:
    """Add the rows of one segment's table to ``index`` (metadata columns only)."""
    cols = {c: table.column(c).to_pylist() for c in ("kind", "source", "epoch", "seq", "pos", "T", "t_min", "t_max", "received")}
    for i in range(table.num_rows):
        index.add(seg_id, cols["kind"][i], cols["source"][i], int(cols["epoch"][i]), int(cols["seq"][i]), int(cols["pos"][i]),
                  int(cols["T"][i]), float(cols["t_min"][i]), float(cols["t_max"][i]), float(cols["received"][i]))


class ArchiveWriter:
    """The one writer of an archive directory.

    Parameters
    ----------
    path:
        the archive directory (created if absent or empty).
    segment_bytes, segment_seconds:
        rotate the open segment past this size or age.
    retention_bytes, retention_seconds:
        delete the oldest sealed segments beyond this total size or age
        (``None``: keep everything).
    capacity_bytes:
        refuse (:class:`ArchiveFull`) appends that would take the archive
        past this size (``None``: until the filesystem is full).
    compression:
        Parquet codec of the sealed segments' compressible columns.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        segment_bytes: int = 256 << 20,
        segment_seconds: float = 3600.0,
        retention_bytes: int | None = None,
        retention_seconds: float | None = None,
        capacity_bytes: int | None = None,
        compression: str = "zstd",
    ) -> None:
        self.path = Path(path)
        if (self.path / MANIFEST).exists():
            read_manifest(self.path)
        else:
            create_manifest(self.path)
        self.segments_dir = self.path / SEGMENTS
        self.segments_dir.mkdir(exist_ok=True)
        self.segment_bytes = int(segment_bytes)
        self.segment_seconds = float(segment_seconds)
        self.retention_bytes = retention_bytes
        self.retention_seconds = retention_seconds
        self.capacity_bytes = capacity_bytes
        self.compression = compression
        self.problems: dict[str, int] = {k: 0 for k in PROBLEMS}
        self.refused = 0  # appends refused (full or failing disk)
        self.deleted_segments = 0
        #: retention never deletes a segment holding a position above this
        self.protect_pos: int | None = None
        self._lock = WriterLock(self.path)
        self._seal_lock = threading.Lock()
        self._to_seal: collections.deque[int] = collections.deque()
        self._seg: OpenSegment | None = None
        try:
            self.index = RunIndex()
            self._recover()
        except BaseException:
            self._lock.release()
            raise
        self.next_pos = self.index.max_pos + 1
        self.durable_pos = self.next_pos - 1
        self.stored_bytes = sum(s.bytes for s in self.index.segments.values() if not s.deleted)
        self._closed = False

    # -- recovery ----------------------------------------------------------------------
    def _problem(self, reason: str, message: str, *args: object) -> None:
        self.problems[reason] = self.problems.get(reason, 0) + 1
        log.warning("archive %s: " + message, self.path, *args)

    def _recover(self) -> None:
        for p in self.segments_dir.glob(".*.tmp"):  # a crash while sealing: the rename never happened
            p.unlink(missing_ok=True)
        index_file = self.path / INDEX
        if index_file.exists():
            try:
                self.index.load_table(pq.read_table(index_file))
            except Exception as exc:  # noqa: BLE001 -- a damaged index is rebuilt, never trusted
                self._problem("invalid", "index unreadable (%s); rebuilding it from the segments", exc)
                self.index = RunIndex()
        on_disk = list_segments(self.segments_dir)
        ids_on_disk = {sid for sid, _, _ in on_disk}
        for sid, seg in list(self.index.segments.items()):
            if not seg.deleted and sid not in ids_on_disk:
                self._problem("missing_segment", "segment %d is in the index but missing on disk", sid)
                self.index.mark(sid, deleted=True)
        changed = False
        for sid, p, sealed in on_disk:
            if sealed:
                leftover = segment_path(self.segments_dir, sid, sealed=False)
                if leftover.exists():  # crash after sealing, before the unlink
                    leftover.unlink()
                if sid not in self.index.segments:
                    try:
                        table = pq.read_table(p, columns=["kind", "source", "epoch", "seq", "pos", "T", "t_min", "t_max",
                                                          "received"])
                    except Exception as exc:  # noqa: BLE001
                        self._problem("unreadable_segment", "sealed segment %s unreadable (%s); skipped", p.name, exc)
                        continue
                    index_rows(self.index, sid, table)
                    self.index.mark(sid, sealed=True, nbytes=p.stat().st_size)
                    changed = True
            else:
                self._seal_file(sid, p, recovering=True)
                changed = True
        if changed:
            self._write_index()

    def _seal_file(self, sid: int, path: Path, *, recovering: bool) -> None:
        """Turn an ``.arrows`` file into Parquet, keeping only rows that verify."""
        scan = scan_stream(path)
        if scan.problem is not None:
            self._problem("torn_tail", "segment %s: %s; the %d bytes after byte %d are dropped%s", path.name, scan.problem,
                          scan.total_bytes - scan.valid_bytes, scan.valid_bytes,
                          " (a crash during a write)" if recovering else "")
        good: list[pa.RecordBatch] = []
        for rb in scan.batches:
            keep = []
            for i, item in enumerate(rows_to_entries(rb, verify=True)):
                if isinstance(item, RowProblem):
                    self._problem(item.reason, "segment %s: %s; row dropped", path.name, item)
                else:
                    keep.append(i)
            good.append(rb if len(keep) == rb.num_rows else rb.take(pa.array(keep, type=pa.int64())))
        table = pa.Table.from_batches(good, schema=SCHEMA)
        if sid not in self.index.segments or recovering:
            # a recovered segment is (re-)indexed from what verified, nothing else
            self.index.segments.pop(sid, None)
            index_rows(self.index, sid, table)
        if table.num_rows:
            nbytes = seal(table, segment_path(self.segments_dir, sid, sealed=True), compression=self.compression)
            self.index.mark(sid, sealed=True, nbytes=nbytes)
        else:
            self.index.mark(sid, sealed=True, deleted=True, nbytes=0)
        path.unlink(missing_ok=True)
        fsync_dir(self.segments_dir)

    def _write_index(self) -> None:
        write_parquet_atomically(self.index.to_table(), self.path / INDEX)

    # -- appending ---------------------------------------------------------------------
    def contains(self, source: str, epoch: int, seq: int) -> bool:
        """Whether this (source, epoch, seq) is stored (durable or not yet synced)."""
        return self.index.contains(source, epoch, seq)

    def _segment(self, incoming: int) -> OpenSegment:
        seg = self._seg
        if seg is not None and (seg.closed or (seg.rows and (seg.size + incoming > self.segment_bytes
                                                             or time.monotonic() - seg.created > self.segment_seconds))):
            self.rotate()
            seg = None
        if seg is None:
            ids = [sid for sid, _, _ in list_segments(self.segments_dir)] + list(self.index.segments)
            sid = max(ids, default=0) + 1
            seg = self._seg = OpenSegment(segment_path(self.segments_dir, sid, sealed=False), sid)
        return seg

    def rotate(self) -> None:
        """Close the open segment (fsync-ed) and queue it for sealing."""
        seg, self._seg = self._seg, None
        if seg is None:
            return
        seg.close()
        self.durable_pos = self.next_pos - 1
        if seg.rows:
            self._to_seal.append(seg.id)
        else:
            seg.path.unlink(missing_ok=True)

    def append(self, batch: Batch, epoch: int = 0, *, received: float | None = None) -> int:
        """Store one batch (not yet durable: see :meth:`sync`); returns its position."""
        return self.append_many([(batch, epoch)], received=received)[0]

    def append_many(self, items: Sequence[tuple[Batch, int]], *, received: float | None = None) -> list[int]:
        """Store several ``(batch, epoch)``; returns their positions.

        Written as messages of at most :data:`MESSAGE_BYTES` each (larger
        buffers come from fresh mmap-ed pages, page-faulted on every call), all
        in one segment.  All or nothing: on :class:`ArchiveFull` /
        :class:`ArchiveError` none is stored and the segment is as before.
        """
        if self._closed:
            raise ArchiveError(f"archive {self.path}: writer is closed")
        if not items:
            return []
        now = time.time() if received is None else received
        first = self.next_pos
        rows = [batch_row(b, pos=first + i, epoch=e, received=now) for i, (b, e) in enumerate(items)]
        groups, size = [[]], 0
        for r in rows:
            nbytes = len(r["planes"]) + 8 * r["T"]
            if groups[-1] and size + nbytes > MESSAGE_BYTES:
                groups.append([])
                size = 0
            groups[-1].append(r)
            size += nbytes
        messages = [(rows_to_record_batch(g).serialize(), len(g)) for g in groups]
        total = sum(m.size for m, _ in messages)
        if self.capacity_bytes is not None and self.stored_bytes + self._open_bytes() + total > self.capacity_bytes:
            self.refused += len(items)
            raise ArchiveFull(f"archive {self.path}: capacity of {self.capacity_bytes} bytes reached")
        try:
            seg = self._segment(total)
            mark = seg.mark()
            try:
                for m, k in messages:
                    seg.append(m, rows=k)
            except ArchiveError:
                seg.rollback(mark)
                raise
        except ArchiveError:
            self.refused += len(items)
            raise
        for r in rows:
            self.index.add(seg.id, r["kind"], r["source"], r["epoch"], r["seq"], r["pos"], r["T"], r["t_min"], r["t_max"], now)
        self.next_pos += len(items)
        return list(range(first, first + len(items)))

    def append_fitting(self, items: Sequence[tuple[Batch, int]], *, received: float | None = None) -> list[int]:
        """:meth:`append_many`, or when the group does not fit (:class:`ArchiveFull`) the
        longest prefix that does, batch by batch; returns the positions of what was stored.

        Raises :class:`ArchiveFull` only if not even the first batch fits.  Callers
        refuse (do not acknowledge) the batches after the returned ones.
        """
        before = self.refused
        try:
            return self.append_many(items, received=received)
        except ArchiveFull:
            if len(items) <= 1:
                raise
        out: list[int] = []
        for item in items:
            try:
                out += self.append_many([item], received=received)
            except ArchiveFull:
                if not out:
                    self.refused = before + len(items)
                    raise
                break
        self.refused = before + len(items) - len(out)
        return out

    def _closed_bytes(self) -> int:
        """Bytes of closed segments still waiting to be sealed."""
        total = 0
        for sid in list(self._to_seal):
            try:
                total += segment_path(self.segments_dir, sid, sealed=False).stat().st_size
            except OSError:
                pass
        return total

    def _open_bytes(self) -> int:
        return self._seg.size if self._seg is not None else 0

    def sync(self) -> int:
        """fsync what was appended; returns the last durable position (-1: none)."""
        ticket = self.begin_sync()
        self.run_sync(ticket)
        return self.end_sync(ticket)

    def begin_sync(self) -> tuple[int, int]:
        """First step of a sync that may run in a worker thread: ``(fd, target)``.

        The fd is a duplicate, so a rotation on the loop thread while the
        fsync runs elsewhere cannot close it under the worker; ``target`` is
        the last position appended now -- later appends are not covered.
        """
        target = self.next_pos - 1
        seg = self._seg
        fd = os.dup(seg.fileno()) if seg is not None and not seg.closed else -1
        return fd, target

    def run_sync(self, ticket: tuple[int, int]) -> None:
        """The fsync itself (thread-safe); raises :class:`ArchiveError` / :class:`ArchiveFull`."""
        fd = ticket[0]
        if fd < 0:
            return
        try:
            os.fsync(fd)
        except OSError as exc:
            raise ArchiveError(f"archive {self.path}: fsync failed: {exc}") from None
        finally:
            os.close(fd)

    def end_sync(self, ticket: tuple[int, int]) -> int:
        """Mark the positions covered by a completed :meth:`run_sync` durable."""
        self.durable_pos = max(self.durable_pos, ticket[1])
        return self.durable_pos

    def maybe_rotate(self) -> bool:
        """Rotate if the open segment is past its size or age; returns whether it did."""
        seg = self._seg
        if seg is not None and seg.rows and (seg.size > self.segment_bytes or time.monotonic() - seg.created > self.segment_seconds):
            self.rotate()
            return True
        return False

    @property
    def pending_seals(self) -> int:
        return len(self._to_seal)

    def seal_pending(self) -> int:
        """Seal the closed segments (thread-safe against appends); returns how many."""
        done = 0
        with self._seal_lock:
            while self._to_seal:
                sid = self._to_seal[0]
                path = segment_path(self.segments_dir, sid, sealed=False)
                self._seal_file(sid, path, recovering=False)
                self._to_seal.popleft()
                self.stored_bytes += self.index.segments[sid].bytes
                done += 1
            if done:
                self._apply_retention()
                self._write_index()
        return done

    def _apply_retention(self) -> None:
        if self.retention_bytes is None and self.retention_seconds is None:
            return
        sealed = sorted((s for s in self.index.segments.values() if s.sealed and not s.deleted), key=lambda s: s.id)
        total = sum(s.bytes for s in sealed) + self._open_bytes()
        now = time.time()
        for s in sealed:
            too_big = self.retention_bytes is not None and total > self.retention_bytes
            too_old = self.retention_seconds is not None and s.received_range[1] < now - self.retention_seconds
            if not (too_big or too_old):
                break
            if self.protect_pos is not None and s.pos_range[1] > self.protect_pos:
                log.info("archive %s: retention wants segment %d but it holds positions after the last checkpoint; kept",
                         self.path, s.id)
                break
            segment_path(self.segments_dir, s.id, sealed=True).unlink(missing_ok=True)
            self.index.mark(s.id, deleted=True)
            total -= s.bytes
            self.stored_bytes -= s.bytes
            self.deleted_segments += 1
            log.info("archive %s: retention deleted segment %d (%d batches, %d bytes, %s)", self.path, s.id, s.batches, s.bytes,
                     "size" if too_big else "age")

    def stats(self) -> dict:
        """Counters for metrics and status messages."""
        return {"path": str(self.path), "next_pos": self.next_pos, "durable_pos": self.durable_pos,
                "stored_bytes": self.stored_bytes + self._open_bytes() + self._closed_bytes(), "open_segment": self._seg.id if self._seg else None,
                "segments": sum(1 for s in self.index.segments.values() if not s.deleted), "refused": self.refused,
                "deleted_segments": self.deleted_segments, "problems": dict(self.problems)}

    def close(self, *, seal_open: bool = True) -> None:
        """Sync, seal (by default) and release the lock."""
        if self._closed:
            return
        try:
            if self._seg is not None:
                if seal_open:
                    self.rotate()
                else:
                    self._seg.close()
                    self._seg = None
            if seal_open:
                self.seal_pending()
            else:
                self._write_index()
        finally:
            self._closed = True
            self._lock.release()

    def __enter__(self) -> "ArchiveWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
