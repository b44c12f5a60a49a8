"""Reading an archive back: batches any estimator takes, filtered by source, time, kind, wires, position.

:func:`open_archive` works on a finished archive and on one a daemon is
writing right now (then the open segment's last message may be mid-write:
that is expected and not reported as damage).  Damage -- a torn tail left by
a crash, a row whose checksum fails, an unreadable Parquet file or row group
-- is logged once per place, counted in :attr:`Archive.problems`, and
skipped: the rest of the archive stays readable.

Memory is bounded by one Parquet row group (:data:`~qsense.streaming.archive.segments.ROW_GROUP_BYTES`)
or one open segment, never by the archive; batches are views on the Arrow
buffers (the packed planes go to the counting kernels without unpacking).
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, Union

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from qsense.records import BellBatch, ShadowBatch

from .index import RunIndex
from .manifest import INDEX, SEGMENTS, is_live, read_manifest
from .schema import Entry, RowProblem, rows_to_entries
from .segments import PAGE_CHECKSUMS_KEY, list_segments, scan_stream, segment_path

__all__ = ["Archive", "open_archive", "segment_may_match"]

log = logging.getLogger(__name__)

Batch = Union[ShadowBatch, BellBatch]


def segment_may_match(seg: Any, sources: set[str] | None, since: float | None, until: float | None, after: int | None,
                      upto: int | None) -> bool:
    """Whether an indexed segment (:class:`~qsense.streaming.archive.index.SegmentInfo`) may hold
    batches of this selection (positions ``after < pos <= upto``, any of ``sources``, record
    times ``since <= t < until``); readers and the distributed planner skip by the same rule."""
    lo, hi = seg.pos_range
    if (after is not None and hi <= after) or (upto is not None and lo > upto):
        return False
    if sources is not None and not (seg.sources & sources):
        return False
    t_lo, t_hi = seg.t_range
    return not ((since is not None and t_hi < since) or (until is not None and t_lo >= until))


def _as_set(value: str | Iterable[str] | None) -> set[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return {value}
    return set(value)


class Archive:
    """A record archive opened for reading (see :func:`open_archive`).

    Parameters
    ----------
    path:
        the archive directory.
    verify:
        check every row's CRC-32 (default).  Off only for trusted data.
    prefetch:
        row groups decoded ahead by a reader thread (default 2; 0 = none).
        Memory stays bounded by ``prefetch + 2`` row groups.
    """

    def __init__(self, path: str | os.PathLike, *, verify: bool = True, prefetch: int = 2) -> None:
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self.verify = verify
        #: record batches (row groups) decoded ahead in a reader thread (0: read in the caller's thread)
        self.prefetch = prefetch
        self.problems: dict[str, int] = {}
        self._reported: set[tuple[str, str]] = set()
        self._index: RunIndex | None = None

    def __repr__(self) -> str:
        return f"Archive({str(self.path)!r})"

    # -- bookkeeping -------------------------------------------------------------------
    def _problem(self, reason: str, where: str, message: str) -> None:
        self.problems[reason] = self.problems.get(reason, 0) + 1
        if (reason, where) not in self._reported:
            self._reported.add((reason, where))
            log.warning("archive %s: %s: %s", self.path, where, message)

    @property
    def live(self) -> bool:
        """Whether a writer holds the archive right now."""
        return is_live(self.path)

    def index(self) -> RunIndex:
        """The index of the sealed segments (``index.parquet``), loaded once."""
        if self._index is None:
            idx = RunIndex()
            f = self.path / INDEX
            if f.exists():
                try:
                    idx.load_table(pq.read_table(f))
                except Exception as exc:  # noqa: BLE001 -- then every segment is simply read
                    self._problem("invalid", INDEX, f"unreadable index ({exc}); reading every segment")
                    idx = RunIndex()
            self._index = idx
        return self._index

    def segments(self) -> list[tuple[int, Path, bool]]:
        """``(id, path, sealed)`` of the segments present now."""
        return list_segments(self.path / SEGMENTS)

    # -- reading -----------------------------------------------------------------------
    def entries(
        self,
        *,
        source: str | Iterable[str] | None = None,
        kind: str | None = None,
        since: float | None = None,
        until: float | None = None,
        wires: Sequence | None = None,
        after: int | None = None,
        upto: int | None = None,
    ) -> Iterator[Entry]:
        """Stored batches with their position, epoch and arrival time, in position order per segment.

        ``source``: a name or names; ``kind``: ``"shadow"`` or ``"bell"``;
        ``since``/``until``: record timestamps (seconds, the batches' ``t``),
        ``since <= t < until``, batches cut where they straddle a bound;
        ``wires``: only batches on exactly these wires; ``after``/``upto``:
        positions ``after < pos <= upto`` (replay after a checkpoint).
        """
        sources = _as_set(source)
        want_wires = None if wires is None else tuple(wires)

        def produce() -> Iterator[list]:
            # runs in a reader thread: Parquet decoding, CRC-32 and plane checks release the GIL,
            # so on two cores reading overlaps with the consumer's estimator updates
            for path, rb, pages_verified in self._record_batches(sources, kind, since, until, after, upto):
                out = []
                for item in rows_to_entries(rb, verify=self.verify and not pages_verified):
                    if isinstance(item, RowProblem):
                        out.append((path, item))
                        continue
                    if want_wires is not None and item.batch.wires != want_wires:
                        continue
                    if since is not None or until is not None:
                        item = _cut(item, since, until)
                        if item is None:
                            continue
                    out.append(item)
                yield out

        for chunk in _prefetched(produce, depth=self.prefetch) if self.prefetch else produce():
            for item in chunk:
                if isinstance(item, tuple):
                    path, problem = item
                    self._problem(problem.reason, path.name, f"{problem}; row skipped")
                    continue
                yield item

    def _record_batches(self, sources: set[str] | None, kind: str | None, since: float | None, until: float | None,
                        after: int | None, upto: int | None) -> Iterator[tuple[Path, pa.RecordBatch, bool]]:
        idx = self.index()
        present = self.segments()
        on_disk = {sid for sid, _, _ in present}
        for sid, seg in sorted(idx.segments.items()):
            # the index lists it as kept, but the file is gone: its batches cannot be read -- say so
            if not seg.deleted and sid not in on_disk and segment_may_match(seg, sources, since, until, after, upto):
                self._problem("missing_segment", f"segment {sid}", f"segment {sid} ({seg.batches} batches) is in the index "
                              "but its file is missing; its batches are skipped")
        for sid, path, sealed in present:
            info = idx.segments.get(sid) if sealed else None
            if info is not None and (info.deleted or not segment_may_match(info, sources, since, until, after, upto)):
                continue
            tables = self._sealed_tables(sid, path) if sealed else self._open_tables(sid, path)
            for rb, pages_verified in tables:
                rb = self._select(rb, sources, kind, since, until, after, upto)
                if rb is not None:
                    yield path, rb, pages_verified

    def batches(self, source: str | Iterable[str] | None = None, since: float | None = None, until: float | None = None,
                **kw) -> Iterator[Batch]:
        """The stored batches (``ShadowBatch`` or ``BellBatch``), filtered as :meth:`entries`."""
        for e in self.entries(source=source, since=since, until=until, **kw):
            yield e.batch

    __iter__ = batches

    #: count a sealed segment that vanishes while being read (False: retention may delete it under a reader)
    _count_vanished = False

    def _sealed_tables(self, sid: int, path: Path, row_groups: tuple[int, int] | None = None
                       ) -> Iterator[tuple[pa.RecordBatch, bool]]:
        """Row groups of a sealed segment, with whether Parquet's page CRC-32 already verified them.

        Sealed segments carry page checksums (pyarrow checks them in C++, at
        almost no cost); a row group whose pages fail is re-read without them
        and its rows checked one by one, so only the damaged rows are lost.
        """
        try:
            pf = pq.ParquetFile(path, memory_map=True, page_checksum_verification=self.verify)  # mmap: 1.5x faster here
            meta = pf.schema_arrow.metadata or {}
        except FileNotFoundError:  # deleted by retention while we read
            if self._count_vanished:
                self._problem("missing_segment", path.name, "segment file vanished; skipped")
            return
        except Exception as exc:  # noqa: BLE001 -- a damaged footer: skip this segment only
            self._problem("unreadable_segment", path.name, f"unreadable Parquet segment ({type(exc).__name__}: {exc}); skipped")
            return
        pages = self.verify and meta.get(PAGE_CHECKSUMS_KEY) == b"1"
        lo, hi = (0, pf.num_row_groups) if row_groups is None else row_groups
        for g in range(lo, min(hi, pf.num_row_groups)):
            try:
                yield from ((rb, pages) for rb in pf.read_row_group(g).combine_chunks().to_batches())
                continue
            except Exception as exc:  # noqa: BLE001
                first = exc
            try:  # the pages failed their checksums (or decoding): fall back to the rows' own CRC-32
                plain = pq.ParquetFile(path, memory_map=True, page_checksum_verification=False)
                rbs = plain.read_row_group(g).combine_chunks().to_batches()
            except Exception as exc:  # noqa: BLE001
                self._problem("unreadable_row_group", f"{path.name}#{g}", f"row group {g} unreadable "
                              f"({type(exc).__name__}: {exc}); skipped")
                continue
            log.warning("archive %s: %s row group %d failed its page checks (%s); checking its rows one by one", self.path,
                        path.name, g, str(first).splitlines()[0] if str(first) else type(first).__name__)
            yield from ((rb, False) for rb in rbs)

    def _open_tables(self, sid: int, path: Path) -> Iterator[pa.RecordBatch]:
        scan = scan_stream(path)
        if scan.total_bytes == 0 and not path.exists():
            # sealed between listing and reading: read the Parquet form instead
            yield from self._sealed_tables(sid, segment_path(path.parent, sid, sealed=True))
            return
        if scan.problem is not None:
            if self.live and scan.valid_bytes and "unreadable message" in scan.problem:
                log.debug("archive %s: %s ends mid-write (live archive)", self.path, path.name)
            else:
                self._problem("torn_tail", path.name, f"{scan.problem}; the rest of this segment is skipped")
        yield from ((rb, False) for rb in scan.batches)

    @staticmethod
    def _select(rb: pa.RecordBatch, sources: set[str] | None, kind: str | None, since: float | None, until: float | None,
                after: int | None, upto: int | None) -> pa.RecordBatch | None:
        mask = np.ones(rb.num_rows, dtype=bool)
        if after is not None or upto is not None:
            pos = rb.column("pos").to_numpy(zero_copy_only=False)
            if after is not None:
                mask &= pos > after
            if upto is not None:
                mask &= pos <= upto
        if sources is not None:
            mask &= np.isin(np.asarray(rb.column("source").to_pylist(), dtype=object), list(sources))
        if kind is not None:
            mask &= np.asarray(rb.column("kind").to_pylist(), dtype=object) == kind
        if since is not None:
            t_max = rb.column("t_max").to_numpy(zero_copy_only=False)
            mask &= ~(t_max < since)
        if until is not None:
            t_min = rb.column("t_min").to_numpy(zero_copy_only=False)
            mask &= ~(t_min >= until)
        if mask.all():
            return rb
        if not mask.any():
            return None
        return rb.filter(pa.array(mask))

    # -- summaries ---------------------------------------------------------------------
    def summary(self) -> dict:
        """Segments, batches, snapshots, bytes, sources and time range (reads metadata columns only)."""
        out = {"path": str(self.path), "format_version": self.manifest.get("version"), "live": self.live, "segments": 0,
               "open_segments": 0, "batches": 0, "records": {"shadow": 0, "bell": 0}, "bytes": 0, "sources": {},
               "t_min": math.inf, "t_max": -math.inf, "pos_max": -1}
        cols = ["kind", "source", "T", "t_min", "t_max", "pos"]
        for sid, path, sealed in self.segments():
            out["segments"] += 1
            out["open_segments"] += 0 if sealed else 1
            try:
                out["bytes"] += path.stat().st_size
            except OSError:
                continue
            if sealed:
                try:
                    tables = [pq.read_table(path, columns=cols)]
                except Exception as exc:  # noqa: BLE001
                    self._problem("unreadable_segment", path.name, f"unreadable ({exc})")
                    continue
            else:
                tables = [pa.Table.from_batches([b.select(cols) for b in self._open_tables(sid, path)])] \
                    if path.exists() else []
            for t in tables:
                if not t.num_rows:
                    continue
                kinds, srcs, T = t.column("kind").to_pylist(), t.column("source").to_pylist(), t.column("T").to_pylist()
                for k, s, n in zip(kinds, srcs, T):
                    out["records"][k] = out["records"].get(k, 0) + n
                    out["sources"][s] = out["sources"].get(s, 0) + 1
                out["batches"] += t.num_rows
                tmin = np.asarray(t.column("t_min").to_numpy(zero_copy_only=False), dtype=float)
                tmax = np.asarray(t.column("t_max").to_numpy(zero_copy_only=False), dtype=float)
                if np.isfinite(tmin).any():
                    out["t_min"] = min(out["t_min"], float(np.nanmin(tmin)))
                    out["t_max"] = max(out["t_max"], float(np.nanmax(tmax)))
                out["pos_max"] = max(out["pos_max"], int(max(t.column("pos").to_pylist())))
        out["problems"] = dict(self.problems)
        return out


_DONE = object()


def _prefetched(produce, depth: int) -> Iterator:
    """Run the generator ``produce()`` in a thread, ``depth`` items ahead; exceptions re-raised here."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def run() -> None:
        try:
            for item in produce():
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_DONE)
        except BaseException as exc:  # noqa: BLE001 -- handed to the consumer
            q.put(exc)

    th = threading.Thread(target=run, name="qsense-archive-reader", daemon=True)
    th.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while th.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                th.join(0.05)


def _cut(entry: Entry, since: float | None, until: float | None) -> Entry | None:
    t = entry.batch.t
    keep = np.ones(len(t), dtype=bool)
    if since is not None:
        keep &= t >= since
    if until is not None:
        keep &= t < until
    if keep.all():
        return entry
    if not keep.any():
        return None
    return Entry(entry.pos, entry.epoch, entry.received, entry.batch[keep])


def open_archive(path: str | os.PathLike, *, verify: bool = True) -> Archive:
    """Open the archive directory ``path`` for reading.

    ``open_archive("night1/").batches(source=None, since=None, until=None)``
    yields ``ShadowBatch`` / ``BellBatch`` objects any estimator takes.  Raises
    :class:`~qsense.streaming.archive.schema.ArchiveError` with a one-line
    reason if the path is not an archive this qsense can read.
    """
    return Archive(path, verify=verify)
