"""Shadow term counting grouped by support: one pass per distinct set of qubits.

Every Pauli term on the same support (the same columns) has the same outcome
parity, so the compiled kernel (:func:`qsense.estimators._jit.count_supports_jit`)
XORs a support's outcome rows once per block of words and then, for each term
on it, ANDs the k letter rows and popcounts.  The parity work grows with the
number of distinct supports, the per-term work is one AND chain and two
popcounts per 64 records.

This module holds the grouping (cached on the :class:`~qsense.pauli.PauliTable`)
and the split of the work into items ``(support, word range)`` that worker
threads run side by side (the kernel releases the GIL); the caller,
:mod:`qsense.estimators.kernels`, owns the rows, the thread pool and the
fallbacks.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from qsense.pauli import PauliTable

__all__ = ["PARALLEL_MIN_WORK", "SupportGroups", "column_order", "count_by_support", "group_rows", "support_groups"]

#: Term-words (terms x 64-record words) below which one thread does all the work:
#: about 0.1 ms of counting, the order of a thread hand-off.
PARALLEL_MIN_WORK = 1 << 18


@dataclass(frozen=True)
class SupportGroups:
    """Terms of a table grouped by support (kernel inputs; see :func:`support_groups`)."""

    start: np.ndarray  # int64 (S + 1,): terms of support s are rows start[s]:start[s+1] below
    k: np.ndarray  # int64 (S,): support size (0 for the identity)
    sign: np.ndarray  # int64 (S, max(kmax, 1)): the support's outcome rows (zero row as padding)
    match: np.ndarray  # int64 (M, max(kmax, 1)): each term's letter rows, in support order
    term_id: np.ndarray  # int64 (M,): the table's index of each row of ``match``
    items1: np.ndarray  # int64 (S, 2): the work items of a one-range job, (s, 0)

    @property
    def S(self) -> int:
        """Number of distinct supports."""
        return int(self.k.shape[0])


def support_groups(table: PauliTable, match_idx: np.ndarray, sign_idx: np.ndarray, valid_row: int, zero_row: int) -> SupportGroups:
    """Group the terms of ``table`` by support (cached on the table per row layout).

    ``match_idx`` / ``sign_idx`` (M, kmax) are the terms' letter and outcome rows
    as :func:`qsense.estimators.kernels._term_indices` builds them; each term's
    slots are put in column order first, so ``X0 Z1`` and ``Z1 X0`` resolved from
    differently ordered wires share a group.
    """
    cache = table.__dict__.setdefault("_support_group_cache", {})
    key = (valid_row, zero_row)
    if key not in cache:
        cache[key] = _compute_groups(table.support, match_idx, sign_idx, valid_row, zero_row)
    return cache[key]


def column_order(sup: np.ndarray) -> np.ndarray:
    """int64 (M, kmax): per term, the slot order that puts its columns ascending and the
    padding (-1) last, stable (for ``np.take_along_axis``)."""
    return np.argsort(np.where(sup < 0, np.iinfo(np.int64).max, sup), axis=1, kind="stable")


def group_rows(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows of ``keys`` (M, w) grouped by value: ``(uniq, by_group, start)`` with the
    distinct rows ``uniq`` (G, w) in sorted order, ``by_group`` (M,) the row indices group
    by group (each group's in their original order) and ``start`` (G + 1,) the groups'
    offsets into ``by_group``."""
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    by_group = np.argsort(inverse, kind="stable")
    counts = np.bincount(inverse, minlength=uniq.shape[0])
    return uniq, by_group, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def _compute_groups(support: np.ndarray, match_idx: np.ndarray, sign_idx: np.ndarray, valid_row: int, zero_row: int) -> SupportGroups:
    M = support.shape[0]
    kmax = support.shape[1] if support.ndim == 2 else 0
    width = max(kmax, 1)
    sup = np.asarray(support, dtype=np.int64).reshape(M, kmax)
    order = column_order(sup)
    sup = np.take_along_axis(sup, order, axis=1)
    match = np.full((M, width), valid_row, dtype=np.int64)
    sign = np.full((M, width), zero_row, dtype=np.int64)
    if kmax:
        match[:, :kmax] = np.take_along_axis(np.asarray(match_idx, dtype=np.int64), order, axis=1)
        sign[:, :kmax] = np.take_along_axis(np.asarray(sign_idx, dtype=np.int64), order, axis=1)
    keys = np.full((M, width), -1, dtype=np.int64)
    keys[:, :kmax] = np.where(sup < 0, -1, sup)
    uniq, by_support, start = group_rows(keys)
    first = by_support[start[:-1]]
    return SupportGroups(
        start=start,
        k=(uniq >= 0).sum(axis=1).astype(np.int64),
        sign=np.ascontiguousarray(sign[first]),
        match=np.ascontiguousarray(match[by_support]),
        term_id=by_support.astype(np.int64),
        items1=np.stack([np.arange(uniq.shape[0]), np.zeros(uniq.shape[0], dtype=np.int64)], axis=1).astype(np.int64),
    )


def _ranges(word_starts: np.ndarray, W: int, pieces: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split the segments' word ranges into about ``pieces`` ranges (none crossing a
    segment): ``(r_start, r_end, r_segment)``."""
    starts = np.asarray(word_starts, dtype=np.int64)
    ends = np.append(starts[1:], W).astype(np.int64)
    size = max(64, -(-W // max(pieces, 1)))
    rs, re_, rg = [], [], []
    for g, (a, b) in enumerate(zip(starts.tolist(), ends.tolist())):
        for lo in range(a, b, size):
            rs.append(lo)
            re_.append(min(b, lo + size))
            rg.append(g)
    return np.asarray(rs, np.int64), np.asarray(re_, np.int64), np.asarray(rg, np.int64)


def count_by_support(
    kernel: Any,
    rows: np.ndarray,
    signs: np.ndarray,
    groups: SupportGroups,
    word_starts: np.ndarray,
    threads: int = 1,
    pool: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per segment and term: (#matching records, #matching records with odd parity),
    int64 (G, M), with the support-grouped ``kernel``; split over ``threads`` workers
    of ``pool`` when the work is large enough (:data:`PARALLEL_MIN_WORK`)."""
    G = len(word_starts)
    M = groups.term_id.shape[0]
    W = rows.shape[1]
    parallel = pool is not None and threads > 1 and W * M >= PARALLEL_MIN_WORK
    if not parallel and G == 1 and W > 0:  # the usual small job: one range, items precomputed
        part_m = np.zeros((1, M), dtype=np.int64)
        part_o = np.zeros((1, M), dtype=np.int64)
        whole = np.array([0, W], dtype=np.int64)
        kernel(rows, signs, groups.items1, groups.start, groups.k, groups.sign, groups.match, groups.term_id,
               whole[:1], whole[1:], part_m, part_o)
        return part_m, part_o
    # enough items for an even split: several per thread, fewer when supports are many
    pieces = max(G, -(-4 * threads // max(groups.S, 1))) if parallel else G
    r_start, r_end, r_seg = _ranges(word_starts, W, pieces)
    R = r_start.shape[0]
    part_m = np.zeros((R, M), dtype=np.int64)
    part_o = np.zeros((R, M), dtype=np.int64)
    if R:
        S = groups.S
        items = np.empty((S * R, 2), dtype=np.int64)  # (support, range), support-major
        items[:, 0] = np.repeat(np.arange(S, dtype=np.int64), R)
        items[:, 1] = np.tile(np.arange(R, dtype=np.int64), S)
        args = (rows, signs)
        rest = (groups.start, groups.k, groups.sign, groups.match, groups.term_id, r_start, r_end, part_m, part_o)
        if parallel:
            # balance by cost: words x (terms + parity rows) of each item
            per_support = (np.diff(groups.start) + groups.k).astype(np.float64)
            cost = np.cumsum(per_support[items[:, 0]] * (r_end - r_start)[items[:, 1]])
            cuts = np.searchsorted(cost, cost[-1] * np.arange(1, threads) / threads)
            bounds = [0, *cuts.tolist(), items.shape[0]]
            futs = [pool.submit(kernel, *args, items[a:b], *rest) for a, b in itertools.pairwise(bounds) if b > a]
            for f in futs:
                f.result()
        else:
            kernel(*args, items, *rest)
    if R == G:  # one range per segment (the usual small job): the parts are the counts
        return part_m, part_o
    matched = np.zeros((G, M), dtype=np.int64)
    odd = np.zeros((G, M), dtype=np.int64)
    if R:
        firsts = np.flatnonzero(np.concatenate([[True], r_seg[1:] != r_seg[:-1]]))
        segs = r_seg[firsts]
        matched[segs] = np.add.reduceat(part_m, firsts, axis=0)
        odd[segs] = np.add.reduceat(part_o, firsts, axis=0)
    return matched, odd
