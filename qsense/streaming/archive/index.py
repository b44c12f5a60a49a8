"""The archive index: which (source, epoch, seq) are stored, and where.

Two views of the same runs (maximal ranges of consecutive ``seq`` of one
source and epoch stored in one segment):

* per segment, the runs and the segment's ranges (positions, timestamps,
  arrival times, sources), so a reader skips segments that cannot match a
  query and a restart finds where replay begins;
* per (source, epoch), the merged seq ranges over the whole archive, so
  :meth:`RunIndex.contains` -- the duplicate check of every incoming batch --
  is a dictionary lookup and a bisection.

A producer numbering its batches 0, 1, 2, ... makes one run per segment, so
the index stays tiny whatever the archive's size.  Runs of segments removed by
retention stay in the index (marked deleted): a batch once stored is still
recognised as a duplicate after its bytes are gone.

On disk: ``index.parquet``, one row per run (:data:`INDEX_SCHEMA`), rewritten
atomically whenever a segment is sealed or deleted; it covers sealed segments
only (the open segment is re-indexed from its own rows on recovery).
"""

from __future__ import annotations

import bisect
import math
import threading
from dataclasses import dataclass, field
from typing import Iterable

import pyarrow as pa

__all__ = ["RunIndex", "SegmentInfo", "INDEX_SCHEMA"]

INDEX_SCHEMA = pa.schema(
    [
        ("segment", pa.int64()),
        ("deleted", pa.bool_()),
        ("bytes", pa.int64()),
        ("kind", pa.string()),
        ("source", pa.string()),
        ("epoch", pa.int64()),
        ("seq_lo", pa.int64()),
        ("seq_hi", pa.int64()),
        ("pos_lo", pa.int64()),
        ("pos_hi", pa.int64()),
        ("batches", pa.int64()),
        ("records", pa.int64()),
        ("t_min", pa.float64()),
        ("t_max", pa.float64()),
        ("received_min", pa.float64()),
        ("received_max", pa.float64()),
    ]
)


@dataclass
class _Run:
    kind: str
    source: str
    epoch: int
    seq_lo: int
    seq_hi: int
    pos_lo: int
    pos_hi: int
    batches: int = 1
    records: int = 0
    t_min: float = math.inf
    t_max: float = -math.inf
    received_min: float = math.inf
    received_max: float = -math.inf


@dataclass
class SegmentInfo:
    """What the index knows about one segment."""

    id: int
    sealed: bool = False
    deleted: bool = False
    bytes: int = 0
    runs: list[_Run] = field(default_factory=list)

    @property
    def pos_range(self) -> tuple[int, int]:
        if not self.runs:
            return (0, -1)
        return min(r.pos_lo for r in self.runs), max(r.pos_hi for r in self.runs)

    @property
    def t_range(self) -> tuple[float, float]:
        return min((r.t_min for r in self.runs), default=math.inf), max((r.t_max for r in self.runs), default=-math.inf)

    @property
    def received_range(self) -> tuple[float, float]:
        return (min((r.received_min for r in self.runs), default=math.inf),
                max((r.received_max for r in self.runs), default=-math.inf))

    @property
    def sources(self) -> set[str]:
        return {r.source for r in self.runs}

    @property
    def batches(self) -> int:
        return sum(r.batches for r in self.runs)

    @property
    def records(self) -> int:
        return sum(r.records for r in self.runs)


def _nan_to(x: float, default: float) -> float:
    return default if x != x else x


class RunIndex:
    """Runs of stored (source, epoch, seq), per segment and merged per key (thread-safe)."""

    def __init__(self) -> None:
        self.segments: dict[int, SegmentInfo] = {}
        self._ranges: dict[tuple[str, int], list[list[int]]] = {}
        self._open_runs: dict[tuple[int, str, int], _Run] = {}  # last run per (segment, source, epoch)
        self._lock = threading.Lock()
        self.max_pos = -1

    # -- membership --------------------------------------------------------------------
    def contains(self, source: str, epoch: int, seq: int) -> bool:
        """Whether (source, epoch, seq) was ever stored (including deleted segments)."""
        with self._lock:  # the daemon stores from a worker thread while its loop checks
            ranges = self._ranges.get((source, epoch))
            if not ranges:
                return False
            i = bisect.bisect_right(ranges, seq, key=lambda r: r[0]) - 1
            return i >= 0 and ranges[i][1] >= seq

    def _insert_range(self, key: tuple[str, int], lo: int, hi: int) -> None:
        ranges = self._ranges.setdefault(key, [])
        if ranges and ranges[-1][1] + 1 == lo:  # the common case: the next batch in order
            ranges[-1][1] = max(ranges[-1][1], hi)
            return
        i = bisect.bisect_right(ranges, lo, key=lambda r: r[0])
        ranges.insert(i, [lo, hi])
        if i > 0 and ranges[i - 1][1] + 1 >= ranges[i][0]:  # touches the range before
            ranges[i - 1][1] = max(ranges[i - 1][1], ranges[i][1])
            del ranges[i]
            i -= 1
        while i + 1 < len(ranges) and ranges[i][1] + 1 >= ranges[i + 1][0]:  # and those after
            ranges[i][1] = max(ranges[i][1], ranges[i + 1][1])
            del ranges[i + 1]

    # -- building --------------------------------------------------------------------
    def add(self, segment: int, kind: str, source: str, epoch: int, seq: int, pos: int, records: int,
            t_min: float, t_max: float, received: float) -> None:
        """Record one stored batch."""
        with self._lock:
            seg = self.segments.get(segment)
            if seg is None:
                seg = self.segments[segment] = SegmentInfo(segment)
            k = (segment, source, epoch)
            run = self._open_runs.get(k)
            t_lo, t_hi = _nan_to(t_min, math.inf), _nan_to(t_max, -math.inf)
            if run is not None and run.kind == kind and run.seq_hi + 1 == seq:
                run.seq_hi, run.pos_hi = seq, pos
                run.batches += 1
                run.records += records
                run.t_min, run.t_max = min(run.t_min, t_lo), max(run.t_max, t_hi)
                run.received_max = max(run.received_max, received)
            else:
                run = _Run(kind, source, epoch, seq, seq, pos, pos, 1, records, t_lo, t_hi, received, received)
                seg.runs.append(run)
                self._open_runs[k] = run
            self._insert_range((source, epoch), seq, seq)
            self.max_pos = max(self.max_pos, pos)

    def mark(self, segment: int, *, sealed: bool | None = None, deleted: bool | None = None, nbytes: int | None = None) -> None:
        with self._lock:
            seg = self.segments.setdefault(segment, SegmentInfo(segment))
            if sealed is not None:
                seg.sealed = sealed
            if deleted is not None:
                seg.deleted = deleted
            if nbytes is not None:
                seg.bytes = nbytes
            if sealed:
                for k in [k for k in self._open_runs if k[0] == segment]:
                    del self._open_runs[k]

    # -- persistence -----------------------------------------------------------------
    def to_table(self, segments: Iterable[int] | None = None) -> pa.Table:
        """The runs of ``segments`` (default: every sealed or deleted one) as a table."""
        with self._lock:
            ids = sorted(s.id for s in self.segments.values() if s.sealed or s.deleted) if segments is None else sorted(segments)
            rows: dict[str, list] = {f.name: [] for f in INDEX_SCHEMA}
            for sid in ids:
                seg = self.segments[sid]
                for r in seg.runs:
                    vals = dict(segment=sid, deleted=seg.deleted, bytes=seg.bytes, kind=r.kind, source=r.source, epoch=r.epoch,
                                seq_lo=r.seq_lo, seq_hi=r.seq_hi, pos_lo=r.pos_lo, pos_hi=r.pos_hi, batches=r.batches,
                                records=r.records, t_min=r.t_min, t_max=r.t_max, received_min=r.received_min,
                                received_max=r.received_max)
                    for k, v in vals.items():
                        rows[k].append(v)
        return pa.table(rows, schema=INDEX_SCHEMA)

    def load_table(self, table: pa.Table) -> None:
        """Add the runs of a table written by :meth:`to_table`."""
        cols = {name: table.column(name).to_pylist() for name in table.schema.names}
        with self._lock:
            for i in range(table.num_rows):
                sid = int(cols["segment"][i])
                seg = self.segments.setdefault(sid, SegmentInfo(sid))
                seg.sealed = True
                seg.deleted = bool(cols["deleted"][i])
                seg.bytes = int(cols["bytes"][i])
                run = _Run(cols["kind"][i], cols["source"][i], int(cols["epoch"][i]), int(cols["seq_lo"][i]),
                           int(cols["seq_hi"][i]), int(cols["pos_lo"][i]), int(cols["pos_hi"][i]), int(cols["batches"][i]),
                           int(cols["records"][i]), float(cols["t_min"][i]), float(cols["t_max"][i]),
                           float(cols["received_min"][i]), float(cols["received_max"][i]))
                seg.runs.append(run)
                self._insert_range((run.source, run.epoch), run.seq_lo, run.seq_hi)
                self.max_pos = max(self.max_pos, run.pos_hi)
