"""Vectorised counting kernels on bit-packed records.

Every estimator in qsense reduces to counting, per Pauli term and per segment of
consecutive records, how many records *match* the term and how many of those have
odd *parity*.  We pack each per-qubit boolean column across records into 64-bit
words (``np.packbits`` + a ``uint64`` view), so one term over 64 records costs a
handful of word ANDs/XORs and a popcount (``np.bitwise_count``).

Layout used below (``W`` words per column, records padded to a multiple of 64
*per segment* so that segments never share a word):

* ``match_rows``  uint64 (R, W): row ``(L-1)*n + q`` is "qubit q was measured in
  the basis of letter L" (shadows) or all-valid (Bell); the last row is the
  validity mask (1 for real records, 0 for padding).
* ``sign_rows``   uint64 (S, W): rows whose XOR over a term's support gives the
  parity; the last row is all zeros (used for padding entries).

A term with support columns ``c_s`` and letters ``L_s`` selects match rows
``m_s`` and sign rows ``s_s`` (padding slots select the validity row and the
zero row), so ``match = AND_s match_rows[m_s]`` and
``parity = XOR_s sign_rows[s_s]``.

Packed records.  :func:`shadow_counts_packed` / :func:`bell_counts_packed` start
from the bit planes of :mod:`qsense.packing` (what the wire format v2 and the
record archive carry) and build the same rows with a few word-wide operations,
skipping the transpose and ``np.packbits``: X = ~(b0 | b1), Y = b0 & ~b1,
Z = b1 & ~b0 (which are b0 and b1 outside the padding), validity = the first
T bits.  The planes hold records end to end
(not padded per segment), so this applies when every segment but the last
holds a multiple of 64 records (one segment always qualifies); the planes'
padding (basis code 3, Bell bits 0) keeps the last partial word exact.  Other
layouts unpack and take the table path.  The counts are the same integers
either way.  :func:`shadow_counts_batch` / :func:`bell_counts_batch` pick the
path for a record batch: planes when the batch already has them
(``batch.has_packed``), the uint8 tables otherwise.

Shadow counts with the compiled kernels go through
:mod:`qsense.estimators.supports`: terms grouped by support share one parity
pass, and large jobs are split over worker threads (:func:`set_threads`;
default: the cores available, ``QSENSE_THREADS`` to override).  Batches with
tables only are packed by :func:`pack_tables` and counted from planes.  The
per-term kernels (:func:`count_terms`) remain for Bell records and the NumPy
fallback; every path gives the same integers.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
from typing import Sequence

import numpy as np

from qsense import packing
from qsense.pauli import PauliTable
from qsense.records import BellBatch, ShadowBatch

from .supports import PARALLEL_MIN_WORK, count_by_support, support_groups

log = logging.getLogger(__name__)

_count_terms_jit = None  # the compiled kernels, imported on first use (numba takes ~0.3 s to import)
_count_supports_jit = None
_pack_shadow_jit = None
_jit_tried = False


def _jit_kernel():
    """The compiled kernel, or None where numba is missing or ``QSENSE_NO_JIT`` is set."""
    global _count_terms_jit, _count_supports_jit, _pack_shadow_jit, _jit_tried
    if not _jit_tried:
        _jit_tried = True
        try:
            if os.environ.get("QSENSE_NO_JIT"):
                raise ImportError("disabled by QSENSE_NO_JIT")
            from ._jit import count_supports_jit, count_terms_jit, pack_shadow_jit

            _count_terms_jit = count_terms_jit
            _count_supports_jit = count_supports_jit
            _pack_shadow_jit = pack_shadow_jit
        except ImportError as exc:  # pragma: no cover - depends on the environment
            log.info("compiled kernel unavailable (%s); using the NumPy kernel", exc)
    return _count_terms_jit

__all__ = [
    "segment_layout",
    "pack_columns",
    "count_terms",
    "shadow_counts",
    "bell_counts",
    "shadow_counts_packed",
    "bell_counts_packed",
    "shadow_counts_batch",
    "pack_tables",
    "bell_counts_batch",
    "planes_apply",
    "set_threads",
    "shadow_term_values",
    "bell_term_values",
    "get_threads",
    "CHUNK_RECORDS",
]

_U8 = [np.uint8(i) for i in range(8)]

#: Records processed per packing pass; bounds the packed tables to a few MB.
CHUNK_RECORDS = 1 << 16
#: Target size of one (terms x words) working array, in 64-bit words: small
#: enough (256 KiB) to stay in cache across the AND/XOR passes.
_WORK_WORDS = 1 << 15


def segment_layout(lengths: Sequence[int]) -> tuple[list[tuple[int, int, int]], np.ndarray, int]:
    """Where each segment goes in a per-segment 64-padded layout.

    Returns ``(copies, word_starts, n_words)``: ``copies`` lists
    ``(src_start, dst_start, length)`` record ranges (one per segment, so the
    scatter is a few slice copies rather than fancy indexing),
    ``word_starts[g]`` is the first word of segment g.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    words = (lengths + 63) // 64
    word_starts = np.concatenate([[0], np.cumsum(words)[:-1]]).astype(np.int64)
    rec_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    copies = [(int(s), int(w) * 64, int(L)) for s, w, L in zip(rec_starts, word_starts, lengths)]
    return copies, word_starts, int(words.sum())


_local = threading.local()


def _buffer(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """A per-thread scratch array, reused across calls.

    Fresh multi-megabyte temporaries come from mmap and are page-faulted on
    every call (measured: ~0.7 ms per 1 MB array, more than the arithmetic);
    reusing buffers keeps the packing step at memory speed.
    """
    cache = _local.__dict__.setdefault("buffers", {})
    size = math.prod(shape)
    dt = np.dtype(dtype)
    buf = cache.get((name, dt))
    if buf is None or buf.size < size:
        buf = cache[(name, dt)] = _aligned_empty(max(size, 1), dt)
    return buf[:size].reshape(shape)


#: bytes: a scratch buffer starts on a cache line
_ALIGN = 64


def _aligned_empty(size: int, dtype: np.dtype) -> np.ndarray:
    """A 1-D uninitialised array whose data starts on a :data:`_ALIGN`-byte boundary.

    glibc serves large blocks from mmap 16 bytes past a page boundary (always
    so once ``MALLOC_TRIM_THRESHOLD_`` is set, as Dask's nanny sets it for its
    workers), and NumPy's copies and bitwise loops from the page-aligned Arrow
    planes into a buffer 16 bytes off ran ~6x slower (2,000 copy+or of a
    (16, 1024) uint64 plane: 0.16 s at offset 16 against 0.027 s at 0 or 64):
    +50% CPU per shadow update in every Dask worker.
    """
    raw = np.empty(size * dtype.itemsize + _ALIGN, dtype=np.uint8)
    off = (-raw.ctypes.data) % _ALIGN
    return raw[off : off + size * dtype.itemsize].view(dtype)


def _transposed(src: np.ndarray, copies: list[tuple[int, int, int]], n_words: int, fill: int, name: str = "T") -> np.ndarray:
    """src (T, c) -> (c, 64 * n_words) with each segment at its padded offset and
    ``fill`` in the padding (slice copies, no fancy indexing). Returns a scratch
    buffer: valid until the next call with the same ``name``."""
    R = 64 * n_words
    dst = _buffer(name, (src.shape[1], R), src.dtype)
    end = 0
    for s, d, L in copies:
        if d > end:
            dst[:, end:d] = fill
        dst[:, d : d + L] = src[s : s + L].T
        end = d + L
    if R > end:
        dst[:, end:] = fill
    return dst


def pack_columns(mask: np.ndarray) -> np.ndarray:
    """bool (c, R) with R a multiple of 64 -> uint64 (c, R // 64).

    Columns are packed along the contiguous axis (much faster than packing
    along axis 0); bit order inside a word is irrelevant to popcounts as long
    as every row uses the same one.
    """
    packed = np.packbits(mask, axis=1, bitorder="little")  # (c, R/8)
    return packed.view(np.uint64)


def _default_threads() -> int:
    """``QSENSE_THREADS`` if set, else the cores this process may run on (at most 8)."""
    env = os.environ.get("QSENSE_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            log.warning("QSENSE_THREADS=%r is not an integer; using one thread", env)
            return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


_threads = _default_threads()
_pool = None
_pool_lock = threading.Lock()


def set_threads(n: int) -> None:
    """Use ``n`` worker threads for term counting (1: no threads at all).

    The default is every core this process may use (at most 8), or the
    ``QSENSE_THREADS`` environment variable.  Work below about 0.1 ms of
    counting always runs in the calling thread, so small batches never pay a
    thread hand-off; the compiled kernels and NumPy's bitwise loops release the
    GIL, so large ones use the cores (measured 1.7-1.9x with 2 threads on 2 cores).
    """
    global _threads, _pool
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"threads must be a positive integer; got {n!r}")
    with _pool_lock:
        if _pool is not None:
            _pool.shutdown(wait=True)
            _pool = None
        _threads = n


def _forget_pool_in_child() -> None:
    """A forked child has none of the parent's worker threads: a pool inherited from
    the parent would queue work that no thread ever runs (a hang), so start afresh."""
    global _pool, _pool_lock
    _pool = None
    _pool_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)


def _get_pool():
    """The worker pool of :func:`set_threads` (created on first large job), or None for one thread."""
    global _pool
    if _threads <= 1:
        return None
    with _pool_lock:
        if _pool is None:
            from concurrent.futures import ThreadPoolExecutor

            _pool = ThreadPoolExecutor(max_workers=_threads, thread_name_prefix="qsense-kernel")
        return _pool


_use_jit = True


def use_jit(enabled: bool) -> bool:
    """Switch between the compiled (numba) and the NumPy counting kernel; returns
    whether the compiled one is now in use (False if numba is unavailable)."""
    global _use_jit
    _use_jit = bool(enabled) and _jit_kernel() is not None
    return _use_jit


def jit_available() -> bool:
    """Whether the compiled counting kernel can be used here."""
    return _jit_kernel() is not None


def get_threads() -> int:
    """Number of worker threads used for term counting."""
    return _threads


def count_terms(
    match_rows: np.ndarray,
    sign_rows: np.ndarray,
    match_idx: np.ndarray,
    sign_idx: np.ndarray,
    word_starts: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per segment and term: (#matching records, #matching records with odd parity).

    Returns two int64 arrays of shape (G, M); splits the terms over the worker
    threads configured with :func:`set_threads`.
    """
    M = match_idx.shape[0]
    pool = _get_pool()
    if pool is None or M < 64 * _threads or M * match_rows.shape[1] < PARALLEL_MIN_WORK:
        return _count_terms(match_rows, sign_rows, match_idx, sign_idx, word_starts)
    edges = np.linspace(0, M, _threads + 1).astype(int)
    futs = [
        pool.submit(_count_terms, match_rows, sign_rows, match_idx[a:b], sign_idx[a:b], word_starts)
        for a, b in zip(edges[:-1], edges[1:])
    ]
    parts = [f.result() for f in futs]
    return np.concatenate([p[0] for p in parts], axis=1), np.concatenate([p[1] for p in parts], axis=1)


def _count_terms(
    match_rows: np.ndarray,
    sign_rows: np.ndarray,
    match_idx: np.ndarray,
    sign_idx: np.ndarray,
    word_starts: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    kernel = _jit_kernel() if _use_jit else None
    if kernel is not None:
        G = len(word_starts)
        matched = np.empty((G, match_idx.shape[0]), dtype=np.int64)
        odd = np.empty_like(matched)
        starts = np.ascontiguousarray(word_starts, dtype=np.int64)
        ends = np.append(starts[1:], match_rows.shape[1]).astype(np.int64)
        kernel(
            match_rows, sign_rows, np.ascontiguousarray(match_idx), np.ascontiguousarray(sign_idx), starts, ends, matched, odd
        )
        return matched, odd
    return _count_terms_numpy(match_rows, sign_rows, match_idx, sign_idx, word_starts)


def _count_terms_numpy(
    match_rows: np.ndarray,
    sign_rows: np.ndarray,
    match_idx: np.ndarray,
    sign_idx: np.ndarray,
    word_starts: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    M, kmax = match_idx.shape
    W = match_rows.shape[1]
    G = len(word_starts)
    matched = np.empty((G, M), dtype=np.int64)
    odd = np.empty((G, M), dtype=np.int64)
    step = max(1, _WORK_WORDS // max(W, 1))
    # reused buffers: no allocation in the loop; take(mode="wrap") writes straight
    # into ``out`` (mode="raise" would buffer a copy first); indices are in range
    acc = np.empty((min(step, M), W), dtype=np.uint64)
    par = np.empty_like(acc)
    tmp = np.empty_like(acc)
    cnt = np.empty(acc.shape, dtype=np.uint8)
    for lo in range(0, M, step):
        hi = min(M, lo + step)
        a, p, t, c = acc[: hi - lo], par[: hi - lo], tmp[: hi - lo], cnt[: hi - lo]
        np.take(match_rows, match_idx[lo:hi, 0], axis=0, out=a, mode="wrap")
        np.take(sign_rows, sign_idx[lo:hi, 0], axis=0, out=p, mode="wrap")
        for s in range(1, kmax):
            np.take(match_rows, match_idx[lo:hi, s], axis=0, out=t, mode="wrap")
            a &= t
            np.take(sign_rows, sign_idx[lo:hi, s], axis=0, out=t, mode="wrap")
            p ^= t
        p &= a
        for arr, dest in ((a, matched), (p, odd)):
            np.bitwise_count(arr, out=c)
            if G == 1:
                dest[0, lo:hi] = c.sum(axis=1, dtype=np.int64)
            else:
                dest[:, lo:hi] = np.add.reduceat(c, word_starts, axis=1, dtype=np.int64).T
    return matched, odd


def _chunks(lengths: Sequence[int], chunk: int):
    """Split segments into record chunks of at most ``chunk`` records.

    Yields ``(start, stop, seg_ids, seg_lengths)`` for each chunk, where the
    chunk's pieces belong to segments ``seg_ids``.
    """
    lengths = [int(x) for x in lengths]
    start = 0
    g = 0
    used = 0  # records of segment g already emitted
    total = sum(lengths)
    while start < total:
        stop = min(total, start + chunk)
        ids, lens = [], []
        pos = start
        while pos < stop:
            while lengths[g] - used == 0:
                g += 1
                used = 0
            take = min(lengths[g] - used, stop - pos)
            ids.append(g)
            lens.append(take)
            used += take
            pos += take
        yield start, stop, np.asarray(ids), lens
        start = stop


def _accumulate(matched: np.ndarray, odd: np.ndarray, ids: np.ndarray, m: np.ndarray, o: np.ndarray) -> None:
    """Add a chunk's per-piece counts to their segments: a piece may continue a
    segment from the previous chunk, hence add rather than assign; within one
    chunk the pieces belong to distinct segments, so fancy-index += is exact."""
    matched[ids] += m
    odd[ids] += o


def _term_indices(table: PauliTable, n: int, sign_letter_rows: bool) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of each term's support slots (cached on the table: streams
    call this for every batch with the same table)."""
    cache = table.__dict__.setdefault("_row_index_cache", {})
    key = (n, sign_letter_rows)
    if key not in cache:
        cache[key] = _compute_term_indices(table, n, sign_letter_rows)
    return cache[key]


def _compute_term_indices(table: PauliTable, n: int, sign_letter_rows: bool) -> tuple[np.ndarray, np.ndarray]:
    pad = table.support < 0
    col = np.where(pad, 0, table.support)
    letter = table.letters.astype(np.int64)
    valid_row = 3 * n
    match_idx = np.where(pad, valid_row, (letter - 1) * n + col)
    if sign_letter_rows:  # Bell: the parity row depends on the letter
        sign_idx = np.where(pad, 3 * n, (letter - 1) * n + col)
    else:  # shadows: the outcome bit of the column
        sign_idx = np.where(pad, n, col)
    return match_idx, sign_idx


def _count_shadow(
    rows: np.ndarray, signs: np.ndarray, table: PauliTable, n: int, match_idx: np.ndarray, sign_idx: np.ndarray, word_starts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Shadow counts of one chunk: the support-grouped compiled kernel when in use
    (:mod:`qsense.estimators.supports`), the per-term kernels otherwise (same integers)."""
    if _use_jit and _jit_kernel() is not None:
        groups = support_groups(table, match_idx, sign_idx, valid_row=3 * n, zero_row=n)
        return count_by_support(_count_supports_jit, rows, signs, groups, word_starts, _threads, _get_pool())
    return count_terms(rows, signs, match_idx, sign_idx, word_starts)


def shadow_counts(bases: np.ndarray, outcomes: np.ndarray, table: PauliTable, lengths: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Counts for single-copy shadows: per segment, per term, records whose bases
    match the term (``matched``) and of those the ones with odd outcome parity."""
    T, n = bases.shape
    G = len(lengths)
    matched = np.zeros((G, table.M), dtype=np.int64)
    odd = np.zeros((G, table.M), dtype=np.int64)
    if T == 0 or table.M == 0:
        return matched, odd
    match_idx, sign_idx = _term_indices(table, n, sign_letter_rows=False)
    for start, stop, ids, lens in _chunks(lengths, CHUNK_RECORDS):
        copies, word_starts, W = segment_layout(lens)
        # one transposed (n, R) code array, basis + 4 * outcome, so packing runs
        # along contiguous memory; padding records get basis 3, which matches
        # no letter. (uint8 shifts are not vectorised in NumPy; +, *, &, >= are.)
        L = stop - start
        code = np.multiply(outcomes[start:stop], _U8[4], out=_buffer("code", (L, n), np.uint8))
        code += bases[start:stop]
        C = _transposed(code, copies, W, 3)
        tmp = _buffer("plane", C.shape, np.uint8)
        # two bit planes of the basis code give all three letter masks with
        # word-wide logic: X = 00, Y = 01, Z = 10 (b1 b0), padding = 11
        b0 = pack_columns(np.bitwise_and(C, _U8[1], out=tmp).view(bool))
        np.bitwise_and(C, _U8[3], out=tmp)
        b1 = pack_columns(np.greater_equal(tmp, _U8[2], out=tmp.view(bool)))
        rows = np.empty((3 * n + 1, W), dtype=np.uint64)
        np.bitwise_not(b0 | b1, out=rows[:n])
        np.bitwise_and(b0, ~b1, out=rows[n : 2 * n])
        np.bitwise_and(b1, ~b0, out=rows[2 * n : 3 * n])
        rows[3 * n] = ~(b0[0] & b1[0])
        signs = np.zeros((n + 1, W), dtype=np.uint64)
        signs[:n] = pack_columns(np.greater_equal(C, _U8[4], out=tmp.view(bool)))
        m, o = _count_shadow(rows, signs, table, n, match_idx, sign_idx, word_starts)
        _accumulate(matched, odd, ids, m, o)
    return matched, odd


def bell_counts(outcomes: np.ndarray, table: PauliTable, lengths: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Counts for two-copy Bell records: per segment and term, the number of
    records (``total``) and those with odd parity of the letter bits
    (X: a, Z: b, Y: a xor b).

    The term value of a record is ``(-1)^{#Y} (-1)^{parity}``.
    """
    T, n = outcomes.shape
    G = len(lengths)
    total = np.zeros((G, table.M), dtype=np.int64)
    odd = np.zeros((G, table.M), dtype=np.int64)
    if T == 0 or table.M == 0:
        return total, odd
    match_idx, sign_idx = _term_indices(table, n, sign_letter_rows=True)
    match_idx = np.full_like(match_idx, 0)  # every record counts: one validity row
    for start, stop, ids, lens in _chunks(lengths, CHUNK_RECORDS):
        copies, word_starts, W = segment_layout(lens)
        C = _transposed(outcomes[start:stop], copies, W, 0)
        valid = np.zeros((1, W * 64), dtype=bool)
        for _, d, L in copies:
            valid[:, d : d + L] = True
        tmp = _buffer("plane", C.shape, np.uint8)
        a = pack_columns(np.greater_equal(C, _U8[2], out=tmp.view(bool)))
        b = pack_columns(np.bitwise_and(C, _U8[1], out=tmp).view(bool))
        signs = np.zeros((3 * n + 1, W), dtype=np.uint64)
        signs[:n] = a
        signs[n : 2 * n] = a ^ b
        signs[2 * n : 3 * n] = b
        rows = pack_columns(valid)
        m, o = count_terms(rows, signs, match_idx, sign_idx, word_starts)
        _accumulate(total, odd, ids, m, o)
    return total, odd


def planes_apply(lengths: Sequence[int]) -> bool:
    """Whether segments of these lengths can be counted straight from bit planes:
    all non-empty, and every one but the last a multiple of 64 records (so that no
    two segments share a word)."""
    ls = [int(x) for x in lengths]  # a handful of segments: plain Python is cheapest
    return bool(ls) and min(ls) > 0 and all(x % 64 == 0 for x in ls[:-1])


def _plane_chunks(lengths: Sequence[int]):
    """Word-aligned chunks of at most CHUNK_RECORDS records: ``(w0, w1, word_starts,
    ids)`` with ``word_starts`` relative to ``w0``.  Needs :func:`planes_apply`."""
    for start, stop, ids, lens in _chunks(lengths, CHUNK_RECORDS):
        rel = np.concatenate([[0], np.cumsum(lens[:-1])]).astype(np.int64)
        yield start // 64, packing.n_words(stop), rel // 64, ids


def _check_lengths(T: int, lengths: Sequence[int]) -> None:
    if sum(int(x) for x in lengths) != T:
        raise ValueError(f"segment lengths sum to {sum(int(x) for x in lengths)}; the planes hold {T} records")


def shadow_counts_packed(
    planes: np.ndarray, T: int, table: PauliTable, lengths: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`shadow_counts` from shadow bit planes, uint64 (3, n, ceil(T/64)) as
    :func:`qsense.packing.pack_shadow` makes them (and ``ShadowBatch.packed()``
    returns).  Identical counts; no unpacking when :func:`planes_apply` holds
    for ``lengths``, otherwise the planes are unpacked (validated) first."""
    n = planes.shape[1]
    _check_lengths(T, lengths)
    G = len(lengths)
    matched = np.zeros((G, table.M), dtype=np.int64)
    odd = np.zeros((G, table.M), dtype=np.int64)
    if T == 0 or table.M == 0:
        return matched, odd
    if not planes_apply(lengths):
        bases, outcomes = packing.unpack_shadow(planes, T)
        return shadow_counts(bases, outcomes, table, lengths)
    match_idx, sign_idx = _term_indices(table, n, sign_letter_rows=False)
    valid = packing.valid_words(T)
    for w0, w1, word_starts, ids in _plane_chunks(lengths):
        W = w1 - w0
        b0, b1 = planes[0, :, w0:w1], planes[1, :, w0:w1]
        rows = _buffer("rows", (3 * n + 1, W), np.uint64)
        np.bitwise_or(b0, b1, out=rows[:n])
        np.invert(rows[:n], out=rows[:n])  # X: code 00 (0 on the padding, code 11)
        # Y = b0 & ~b1 and Z = b1 & ~b0; validated planes have code 11 only on the
        # padding, so these are b0 and b1 with the padding bits of the last word cleared
        rows[n : 2 * n] = b0
        rows[2 * n : 3 * n] = b1
        rows[3 * n] = valid[w0:w1]
        if w1 == valid.shape[0]:
            rows[n : 3 * n, -1] &= valid[-1]
        signs = _buffer("signs", (n + 1, W), np.uint64)
        signs[:n] = planes[2, :, w0:w1]
        signs[n] = 0
        m, o = _count_shadow(rows, signs, table, n, match_idx, sign_idx, word_starts)
        _accumulate(matched, odd, ids, m, o)
    return matched, odd


def bell_counts_packed(planes: np.ndarray, T: int, table: PauliTable, lengths: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`bell_counts` from Bell bit planes, uint64 (2, n, ceil(T/64)) (a, b) as
    :func:`qsense.packing.pack_bell` makes them.  Identical counts; unpacks only
    when :func:`planes_apply` does not hold for ``lengths``."""
    n = planes.shape[1]
    _check_lengths(T, lengths)
    G = len(lengths)
    total = np.zeros((G, table.M), dtype=np.int64)
    odd = np.zeros((G, table.M), dtype=np.int64)
    if T == 0 or table.M == 0:
        return total, odd
    if not planes_apply(lengths):
        return bell_counts(packing.unpack_bell(planes, T), table, lengths)
    match_idx, sign_idx = _term_indices(table, n, sign_letter_rows=True)
    match_idx = np.full_like(match_idx, 0)  # every record counts: one validity row
    valid = packing.valid_words(T)
    for w0, w1, word_starts, ids in _plane_chunks(lengths):
        W = w1 - w0
        a, b = planes[0, :, w0:w1], planes[1, :, w0:w1]
        signs = _buffer("signs", (3 * n + 1, W), np.uint64)
        signs[:n] = a
        np.bitwise_xor(a, b, out=signs[n : 2 * n])
        signs[2 * n : 3 * n] = b
        signs[3 * n] = 0
        rows = _buffer("rows", (1, W), np.uint64)
        rows[0] = valid[w0:w1]  # the padding bits are 0 in a and b, and masked here
        m, o = count_terms(rows, signs, match_idx, sign_idx, word_starts)
        _accumulate(total, odd, ids, m, o)
    return total, odd


def pack_tables(bases: np.ndarray, outcomes: np.ndarray) -> np.ndarray:
    """Shadow bit planes of valid uint8 (T, n) tables (as :func:`qsense.packing.pack_shadow`
    makes them) with the compiled packer (8x8 byte transposes), word ranges split over
    the worker threads for large tables; :func:`qsense.packing.pack_shadow` where numba is unavailable."""
    if not (_use_jit and _jit_kernel() is not None):
        return packing.pack_shadow(bases, outcomes)
    T, n = bases.shape
    W = packing.n_words(T)
    planes = np.empty((packing.SHADOW_PLANES, n, W), dtype=np.uint64)
    if planes.size == 0:
        return planes
    if sys.byteorder != "little":  # pragma: no cover - the word views below assume it
        return packing.pack_shadow(bases, outcomes)
    m8 = -(-n // 8)
    if n % 8 == 0:
        b = np.ascontiguousarray(bases)
        o = np.ascontiguousarray(outcomes)
    else:  # columns padded to a multiple of 8 (one copy), so that rows are whole words
        b = np.zeros((T, 8 * m8), dtype=np.uint8)
        o = np.zeros((T, 8 * m8), dtype=np.uint8)
        b[:, :n] = bases
        o[:, :n] = outcomes
    B, O = b.view(np.uint64), o.view(np.uint64)
    pool = _get_pool()
    if pool is not None and T * n >= 8 * PARALLEL_MIN_WORK:
        edges = np.linspace(0, W, _threads + 1).astype(int).tolist()
        futs = [pool.submit(_pack_shadow_jit, B, O, T, n, planes, lo, hi) for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo]
        for f in futs:
            f.result()
    else:
        _pack_shadow_jit(B, O, T, n, planes, 0, W)
    if T % 64:  # padding records: basis code 11, outcome 0
        pad = ~packing.valid_words(T)[-1]
        planes[0, :, -1] |= pad
        planes[1, :, -1] |= pad
    return planes


def shadow_counts_batch(batch: ShadowBatch, table: PauliTable, lengths: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`shadow_counts` for a batch: from its planes when it has them and the
    segments allow (see :func:`planes_apply`), from its uint8 tables otherwise.

    A batch with tables only is packed first (:func:`pack_tables`, the compiled
    packer, parallel for large batches) when the compiled kernels are in use and
    the segments allow: measured about 3x NumPy's chunked transpose + ``packbits``
    per core.  The planes are not cached on the batch.
    """
    if batch.has_packed and planes_apply(lengths):
        return shadow_counts_packed(batch.packed(), batch.T, table, lengths)
    if _use_jit and _jit_kernel() is not None and planes_apply(lengths) and table.M:
        return shadow_counts_packed(pack_tables(batch.bases, batch.outcomes), batch.T, table, lengths)
    return shadow_counts(batch.bases, batch.outcomes, table, lengths)


def bell_counts_batch(batch: BellBatch, table: PauliTable, lengths: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`bell_counts` for a batch: from its planes when it has them and the
    segments allow, from its uint8 outcomes otherwise."""
    if batch.has_packed and planes_apply(lengths):
        return bell_counts_packed(batch.packed(), batch.T, table, lengths)
    return bell_counts(batch.outcomes, table, lengths)


def shadow_term_values(bases: np.ndarray, outcomes: np.ndarray, table: PauliTable, term_ids: np.ndarray) -> np.ndarray:
    """Per-snapshot estimates x_t(P) = 3^k (-1)^parity or 0, float64 (T, len(term_ids)).

    Dense (T x terms) work: used only for the few terms that belong to Pauli
    sums, whose error bars need per-snapshot products of terms.
    """
    sup = table.support[term_ids]
    let = table.letters[term_ids].astype(np.int16)
    out = np.ones((bases.shape[0], len(term_ids)))
    for s in range(sup.shape[1]):
        pad = sup[:, s] < 0
        col = np.where(pad, 0, sup[:, s])
        f = np.where(bases[:, col] == let[:, s] - 1, 3.0 * (1.0 - 2.0 * outcomes[:, col]), 0.0)
        f[:, pad] = 1.0
        out *= f
    return out


def bell_term_values(outcomes: np.ndarray, table: PauliTable, term_ids: np.ndarray) -> np.ndarray:
    """Per-shot Bell values (-1)^{#Y} (-1)^parity, float64 (T, len(term_ids))."""
    sup = table.support[term_ids]
    let = table.letters[term_ids]
    a = (outcomes >> 1).astype(np.int8)
    b = (outcomes & 1).astype(np.int8)
    sign_bit = {1: a, 2: a ^ b, 3: b}
    par = np.zeros((outcomes.shape[0], len(term_ids)), dtype=np.int8)
    for s in range(sup.shape[1]):
        pad = sup[:, s] < 0
        col = np.where(pad, 0, sup[:, s])
        for L, bits in sign_bit.items():
            sel = (let[:, s] == L) & ~pad
            if sel.any():
                par[:, sel] ^= bits[:, col[sel]]
    ysign = np.where((let == 2).sum(axis=1) % 2 == 1, -1.0, 1.0)
    return (1.0 - 2.0 * par) * ysign
