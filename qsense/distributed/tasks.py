"""What runs on a worker: read one partition, fold it into fresh estimators; and the merge of two partial results.

:func:`run_partition` opens the archive *path* on the worker (a shared
filesystem is assumed: every worker sees the archive at the same path), reads
exactly the partition's row groups with the same filters, CRC checks and
damage accounting as :meth:`Archive.entries`, and updates fresh copies of the
estimator templates (pickled empty estimators, a few KiB).  It returns a
:class:`Partial`: estimator states as ``to_bytes()`` blobs, batch and snapshot
counts, sources and problem counts -- small, whatever the partition's size.

Estimators bind to one wire set, and a fresh copy on a worker cannot know
which wire set the whole selection starts with; so a partial keeps one state
per estimator *and wire set* (a "bucket", with the position of its first
accepted batch).  :func:`merge_partials` merges buckets of equal wires, left
then right; :func:`finish` makes the bucket whose first batch comes first the
estimator's result and merges the others into it where the estimator accepts
them (a :class:`ShadowEstimator` refuses other wires: those batches are
counted as refused, as a single process updating in position order would
count them).  Each estimator gets only batches of its record kind.
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from qsense.records import BellBatch, ShadowBatch
from qsense.streaming.archive.index import RunIndex
from qsense.streaming.archive.reader import Archive

from .partitions import Partition

log = logging.getLogger(__name__)

__all__ = ["Bucket", "Partial", "finish", "merge_partials", "pack_templates", "record_kind", "run_partition", "warm_worker"]


def record_kind(estimator: Any) -> str:
    """``"shadow"`` or ``"bell"``: the record kind an estimator takes."""
    from qsense.estimators.bell import AllPauliSquares, BellEstimator
    from qsense.estimators.interferometry.squared import SquaredVisibilityEstimator
    from qsense.estimators.interferometry.visibility import VisibilityEstimator
    from qsense.estimators.purity import ShadowPurity
    from qsense.estimators.shadow import ShadowEstimator

    if isinstance(estimator, (ShadowEstimator, ShadowPurity, VisibilityEstimator)):
        return "shadow"
    if isinstance(estimator, (BellEstimator, AllPauliSquares, SquaredVisibilityEstimator)):
        return "bell"
    kind = getattr(estimator, "record_kind", None)
    if kind in ("shadow", "bell"):
        return kind
    raise TypeError(f"{type(estimator).__name__} is not an estimator qsense.distributed knows (shadow or Bell records)")


def pack_templates(estimators: list[Any]) -> bytes:
    """The estimator templates as one pickle (what crosses to the workers); each must hold no data yet."""
    for e in estimators:
        record_kind(e)
        if getattr(e, "count", 0):
            raise ValueError(f"{type(e).__name__} already holds data: pass empty estimators as templates")
    return pickle.dumps(list(estimators), protocol=pickle.HIGHEST_PROTOCOL)


@dataclass
class Bucket:
    """One estimator's statistics over the batches of one wire set."""

    #: ``to_bytes()`` of the estimator, or None while it accepted nothing
    state: bytes | None = None
    #: position of the first accepted batch (orders the buckets)
    first_pos: int | None = None
    batches: int = 0
    records: int = 0
    refused_batches: int = 0
    refused_records: int = 0


@dataclass
class Partial:
    """The reduction of one partition or of a run of adjacent partitions (in position order)."""

    #: partition numbers covered, ``[lo, hi)``
    span: tuple[int, int]
    #: per template: wires -> bucket
    buckets: list[dict[tuple, Bucket]]
    #: (kind, wires) -> [batches, records, position of the first batch] of every selected batch
    groups: dict[tuple[str, tuple], list[int]] = field(default_factory=dict)
    sources: set[str] = field(default_factory=set)
    problems: dict[str, int] = field(default_factory=dict)
    #: per partition: (number, batches, records, seconds, worker) -- seconds of reading and updating
    stats: list[tuple[int, int, int, float, str]] = field(default_factory=list)


class _PartitionArchive(Archive):
    """An :class:`Archive` restricted to one partition: its reader, filters and damage counting, on fewer rows."""

    def __init__(self, root: str, part: Partition, *, verify: bool) -> None:
        # one row group (the default partition) is decoded as one piece: a reader thread could not overlap it
        # with counting, only add a thread start and a hand-off per task (3-9% of the CPU in-process, near the noise)
        super().__init__(root, verify=verify)
        if part.sealed and part.row_groups is not None and part.row_groups[1] - part.row_groups[0] == 1:
            self.prefetch = 0
        self._part = part

    def index(self) -> RunIndex:
        # the planner already skipped by the index; reloading it per task would count a damaged index once per task
        return RunIndex()

    def segments(self) -> list[tuple[int, Path, bool]]:
        return [(self._part.segment, Path(self._part.path), self._part.sealed)]

    _count_vanished = True  # planned but gone: deleted under us, counted

    def _sealed_tables(self, sid: int, path: Path, row_groups: tuple[int, int] | None = None
                       ) -> Iterator[tuple[pa.RecordBatch, bool]]:
        # the reader's own checks and fallback, on the partition's row groups only
        return super()._sealed_tables(sid, path, row_groups=self._part.row_groups if self._part.sealed else row_groups)


def warm_worker(threads: int | None = None, kernels: bool = True) -> int:
    """Prepare this process for tasks; run on every worker before the first (``client.run(warm_worker)``).

    ``threads``: counting-kernel threads for this worker (``None``: leave them);
    ``kernels``: load the compiled counting kernels (numba: ~2-3 s on first use)
    with a tiny shadow and Bell update, and import every estimator module a
    task imports.  Returns the process id.
    """
    import os

    import numpy as np

    if threads is not None:
        from qsense.estimators import kernels as _k

        if _k.get_threads() != int(threads):
            _k.set_threads(int(threads))
    if not kernels:
        return os.getpid()

    from qsense.estimators.bell import BellEstimator
    from qsense.estimators.shadow import ShadowEstimator
    from qsense.pauli import parse_observable

    record_kind(ShadowEstimator([parse_observable("Z")]))  # imports the estimator modules a task's templates need
    rng = np.random.default_rng(0)
    shadow = ShadowBatch(rng.integers(0, 3, (4096, 3), dtype=np.uint8), rng.integers(0, 2, (4096, 3), dtype=np.uint8))
    shadow.packed()  # archive batches carry bit planes: warm that path, not only the table one
    ShadowEstimator([parse_observable("XZ"), parse_observable("YIZ")]).update(shadow)
    bell = BellBatch(rng.integers(0, 4, (4096, 2)))
    bell.packed()
    BellEstimator([parse_observable("XZ")]).update(bell)
    return os.getpid()


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except Exception:  # noqa: BLE001 -- in-process
        return "local"


def run_partition(root: str, part: Partition, templates: bytes, selection: dict[str, Any], verify: bool = True) -> Partial:
    """Read one partition of the archive at ``root`` and fold it into fresh copies of the templates."""
    t0 = time.perf_counter()
    protos = pickle.loads(templates)
    kinds = [record_kind(e) for e in protos]
    live: list[dict[tuple, Any]] = [{} for _ in protos]
    out = Partial((part.number, part.number + 1), [{} for _ in protos])
    arch = _PartitionArchive(root, part, verify=verify)
    nb = nr = 0
    for entry in arch.entries(**selection):
        b = entry.batch
        kind = "bell" if isinstance(b, BellBatch) else "shadow" if isinstance(b, ShadowBatch) else str(b.kind)
        wires = tuple(b.wires)
        g = out.groups.setdefault((kind, wires), [0, 0, entry.pos])
        g[0] += 1
        g[1] += b.T
        out.sources.add(b.source)
        nb += 1
        nr += b.T
        for i, proto_kind in enumerate(kinds):
            if proto_kind != kind:
                continue
            bucket = out.buckets[i].setdefault(wires, Bucket())
            est = live[i].get(wires)
            if est is None:
                est = live[i][wires] = pickle.loads(pickle.dumps(protos[i]))
            try:
                est.update(b)
            except ValueError:  # refused (wires, size): counted, as a sequential update would refuse it
                bucket.refused_batches += 1
                bucket.refused_records += b.T
                continue
            if bucket.first_pos is None:
                bucket.first_pos = entry.pos
            bucket.batches += 1
            bucket.records += b.T
    for i, per in enumerate(live):
        for wires, est in per.items():
            if out.buckets[i][wires].batches:
                out.buckets[i][wires].state = est.to_bytes()
    out.problems = dict(arch.problems)
    out.stats.append((part.number, nb, nr, time.perf_counter() - t0, _worker_name()))
    return out


def _merge_bucket(cls: type, a: Bucket, b: Bucket) -> Bucket:
    if a.state is None or b.state is None:
        state, first = (a.state or b.state), (a.first_pos if a.state is not None else b.first_pos)
    else:
        state, first = cls.from_bytes(a.state).merge(cls.from_bytes(b.state)).to_bytes(), a.first_pos
    return Bucket(state, first, a.batches + b.batches, a.records + b.records, a.refused_batches + b.refused_batches,
                  a.refused_records + b.refused_records)


def merge_partials(templates: bytes, left: Partial, right: Partial) -> Partial:
    """``left`` then ``right`` (adjacent spans, left first): estimator states merged per wire set."""
    if left.span[1] != right.span[0]:
        raise ValueError(f"merging partials out of order: {left.span} then {right.span}")
    protos = pickle.loads(templates)
    buckets = []
    for i, proto in enumerate(protos):
        merged = dict(left.buckets[i])
        for wires, bb in right.buckets[i].items():
            merged[wires] = _merge_bucket(type(proto), merged[wires], bb) if wires in merged else bb
        buckets.append(merged)
    groups = {k: list(v) for k, v in left.groups.items()}
    for k, (n, r, first) in right.groups.items():
        g = groups.setdefault(k, [0, 0, first])  # left's first position stays: it comes first
        g[0] += n
        g[1] += r
    problems = dict(left.problems)
    for k, v in right.problems.items():
        problems[k] = problems.get(k, 0) + v
    return Partial((left.span[0], right.span[1]), buckets, groups, left.sources | right.sources, problems,
                   left.stats + right.stats)


def finish(templates: bytes, partial: Partial) -> tuple[list[Any], list[dict[tuple, Any]], list[dict[str, int]],
                                                         list[dict[tuple, int]]]:
    """The filled estimators, per template: ``(estimators, by_wires, refused, refused_by_wires)``.

    ``estimators[i]`` holds the wire set whose first accepted batch comes first
    in position order, with every other wire set the estimator accepts merged
    in (in order of first appearance); ``by_wires[i]`` holds each wire set on
    its own; ``refused[i]`` counts ``batches`` and ``records`` the estimator
    did not take; ``refused_by_wires[i]`` the batches a fresh estimator refused, per wire set.
    """
    protos = pickle.loads(templates)
    ests, by_wires, refused, refused_by_wires = [], [], [], []
    for i, proto in enumerate(protos):
        cls = type(proto)
        rb = sum(b.refused_batches for b in partial.buckets[i].values())
        rr = sum(b.refused_records for b in partial.buckets[i].values())
        filled = sorted((b.first_pos, w, b) for w, b in partial.buckets[i].items() if b.state is not None)
        per = {w: cls.from_bytes(b.state) for _, w, b in filled}
        base = None
        for _, w, b in filled:
            if base is None:
                base = cls.from_bytes(b.state)
                continue
            try:
                base.merge(cls.from_bytes(b.state))
            except ValueError:  # bound to other wires: a sequential update would have refused these batches
                rb += b.batches
                rr += b.records
        ests.append(base if base is not None else pickle.loads(pickle.dumps(proto)))
        by_wires.append(per)
        refused.append({"batches": rb, "records": rr})
        refused_by_wires.append({w: b.refused_batches for w, b in partial.buckets[i].items() if b.refused_batches})
    return ests, by_wires, refused, refused_by_wires
