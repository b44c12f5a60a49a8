"""The partition plan: which pieces of an archive the tasks of :func:`qsense.distributed.estimate` read.

A partition is a run of consecutive row groups of one sealed segment (grown
while the next row group still fits in ``partition_bytes`` of compressed
Parquet data; at least one row group, never split inside one) or one whole
open segment.  Partitions are numbered in
archive order -- segment id, then row group -- which is position order, so
the plan, and with it the median-of-means blocks of a shadow estimate, is a
function of the archive's layout and ``partition_bytes`` only, never of the
cluster that runs it.

Planning reads the index and the Parquet footers (a few KiB per segment),
never the data.  A segment the index skips for the selection (positions,
sources, time range) is left out, as :meth:`Archive.entries` would skip it.
A segment whose footer cannot be read becomes one whole-segment partition,
so the task that reads it reports the damage exactly once, where the
single-process reader would.  A segment the index lists (not deleted) but
whose file is gone is counted as ``missing_segment`` here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pyarrow.parquet as pq

from qsense.streaming.archive.reader import segment_may_match
from qsense.streaming.archive.segments import ROW_GROUP_BYTES

__all__ = ["DEFAULT_PARTITION_BYTES", "Partition", "plan"]

#: Default target size of a partition: one full row group (memory per task stays one row group ahead).
DEFAULT_PARTITION_BYTES = ROW_GROUP_BYTES


@dataclass(frozen=True)
class Partition:
    """One task's share of an archive: an archive reference, never data."""

    #: place in position order (0, 1, ...): the leaf of the merge tree
    number: int
    segment: int
    #: the segment file (absolute, so a worker on a shared filesystem opens the same file)
    path: str
    sealed: bool
    #: row groups ``[lo, hi)`` of a sealed segment; ``None``: the whole segment (open, or a footer that did not read)
    row_groups: tuple[int, int] | None
    #: Parquet bytes (compressed) of those row groups, or the file size
    bytes: int

    def __str__(self) -> str:
        rg = "all" if self.row_groups is None else f"row groups {self.row_groups[0]}..{self.row_groups[1] - 1}"
        return f"partition {self.number}: segment {self.segment} ({rg}, {self.bytes} bytes)"


def _as_set(value: str | Iterable[str] | None) -> set[str] | None:
    if value is None:
        return None
    return {value} if isinstance(value, str) else set(value)


def plan(archive: Any, *, partition_bytes: int = DEFAULT_PARTITION_BYTES, source: str | Iterable[str] | None = None,
         since: float | None = None, until: float | None = None, after: int | None = None,
         upto: int | None = None) -> tuple[list[Partition], dict[str, int]]:
    """The partitions of ``archive`` (an :class:`~qsense.streaming.archive.Archive`) for a selection, and the problems seen.

    Returns ``(partitions, problems)``; ``problems`` counts only what planning
    itself finds (``missing_segment``); damage inside segments is counted by
    the tasks that read them.
    """
    if int(partition_bytes) < 1:
        raise ValueError("partition_bytes must be a positive number of bytes")
    sources = _as_set(source)
    idx = archive.index()
    problems: dict[str, int] = {}
    present = archive.segments()
    ids = {sid for sid, _, _ in present}
    for sid, info in sorted(idx.segments.items()):
        if info.sealed and not info.deleted and sid not in ids:
            # the single-process reader lists files only and passes over this silently; say it
            problems["missing_segment"] = problems.get("missing_segment", 0) + 1
    out: list[Partition] = []
    for sid, path, sealed in present:
        info = idx.segments.get(sid) if sealed else None
        # the same skips as Archive._record_batches, so the same rows are read
        if info is not None and (info.deleted or not segment_may_match(info, sources, since, until, after, upto)):
            continue
        full = str(path.resolve())
        if not sealed:
            out.append(Partition(len(out), sid, full, False, None, _size(path)))
            continue
        try:
            meta = pq.ParquetFile(path).metadata
        except FileNotFoundError:  # deleted by retention since the listing
            continue
        except Exception:  # noqa: BLE001 -- a damaged footer: the task reports it, once
            out.append(Partition(len(out), sid, full, True, None, _size(path)))
            continue
        sizes = [sum(meta.row_group(g).column(c).total_compressed_size for c in range(meta.row_group(g).num_columns))
                 for g in range(meta.num_row_groups)]
        start, size = 0, 0
        for g, rg_size in enumerate(sizes):
            size += rg_size
            # close before the next row group would overshoot the target: row groups (~64 MiB before
            # compression) then make one partition each by default, not two
            if g == len(sizes) - 1 or size >= partition_bytes or size + sizes[g + 1] > partition_bytes:
                out.append(Partition(len(out), sid, full, True, (start, g + 1), size))
                start, size = g + 1, 0
    return out, problems


def _size(path: Any) -> int:
    try:
        return int(path.stat().st_size)
    except OSError:
        return 0
