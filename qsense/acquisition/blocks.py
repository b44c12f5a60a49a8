"""Copies in blocks: the vectorised path through memory, scheduler and backends.

Experimental sources deliver 10^5–10^6 copies per second; handling them one
:class:`~qsense.acquisition.memory.Copy` at a time costs ~35 µs of Python each.  A
:class:`CopyBlock` carries many copies of *one* state (one pairing key) with an
array of arrival times, and every stage handles it with array operations:

* drivers yield blocks (:func:`qsense.acquisition.pipeline.poisson_blocks`, or
  ``poisson_copies(..., block=N)``; the telescope driver by default, its
  photons as the block's ``rows``), or yield copies one by one and the
  pipeline coalesces consecutive copies of one state into blocks
  (:mod:`qsense.acquisition.coalesce`, on by default);
* :meth:`qsense.acquisition.scheduler.Scheduler.on_block` decides the role of every copy of
  the block at once (:func:`schedule_segment`, below) and accounts the copies
  that passed through memory inside the block in bulk;
* the result is at most one :class:`~qsense.acquisition.backends.BlockPlan` per family,
  which a backend with ``measure_block`` (``qsense.sims.backend_sim.SimulatedBackend``)
  measures with one sampler call; other backends get the equivalent per-copy
  :class:`~qsense.acquisition.backends.MeasurementPlan` (``BlockPlan.to_plan()``).

Why a compiled scan and not a closed form.  The per-copy rule is a deficit
counter (credit += f per arrival, −1 per copy committed to Bell) whose spending
depends on what happened to earlier openers (an opener evicted at the cap costs
one copy, a closed pair two), so each decision depends on the eviction history:
a sequential recurrence with data-dependent resets and clipping, for which NumPy
has no exact scan.  :func:`schedule_segment` runs exactly the per-copy rule over
the block's arrays in one pass, compiled with numba when it is available (a few
ns per copy; the plain-Python function is the fallback).  With one pairing key
per block the partner of a closer at index j is always the opener at j − 1, so
the result is a single ``roles`` array (layout below) from which pairs, waits,
shadows and evictions follow by array indexing.

``roles`` layout: int8, shape ``(N,)``, one entry per copy of the block, values
:data:`SHADOW`, :data:`OPEN` (stored and later closed by copy j + 1),
:data:`CLOSE` (closes the pair with copy j − 1, or, at j = 0, with the copy of
this key that was already waiting in memory), :data:`EVICT_CAP` /
:data:`EVICT_MEMORY` (stored, then evicted at the plan's cap / the memory's
``max_wait``), :data:`WAITING` (stored, still waiting at the end of the block),
:data:`NO_SLOT` (would have opened, but the memory had no slot: shadow).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterator, Mapping

import numpy as np

from .memory import Copy

__all__ = [
    "CopyBlock",
    "schedule_segment",
    "segment_kernel",
    "SHADOW",
    "OPEN",
    "CLOSE",
    "EVICT_CAP",
    "EVICT_MEMORY",
    "WAITING",
    "NO_SLOT",
    "ROLE_NAMES",
]

SHADOW, OPEN, CLOSE, EVICT_CAP, EVICT_MEMORY, WAITING, NO_SLOT = range(7)
ROLE_NAMES = ("shadow", "open", "close", "evict_cap", "evict_memory", "waiting", "no_slot")


@dataclass(frozen=True, eq=False)
class CopyBlock:
    """``N`` copies of one state, as a driver delivers them in one go.

    Parameters
    ----------
    state:
        The state of every copy (simulated: one array object shared by all of
        them, so backends sample them with one call; hardware: ``None``/handle).
    t:
        float64 arrival times, shape ``(N,)``, non-decreasing (seconds on the
        pipeline's clock); ``None`` means "all arrived now" (stamped on arrival).
    count:
        ``N`` when ``t`` is None (otherwise ``len(t)``).
    source, seq:
        Producer name; ``seq`` is the sequence number of the first copy (copy j
        has ``seq + j``).
    wires, key, meta:
        As for :class:`~qsense.acquisition.memory.Copy` (``key`` defaults to ``source``).
    rows:
        Per-copy payload, row ``j`` belonging to copy ``j`` (``None``: none): any
        object with ``len(rows) == N`` that NumPy-style integer-array indexing
        ``rows[idx]`` gathers into the same type — a NumPy array, or a
        dataclass of arrays such as the telescope's
        :class:`~qsense.sims.telescope.Photons` (layout in ``docs/pipeline.md``,
        "Per-copy rows").  The scheduler gathers each
        :class:`~qsense.acquisition.backends.BlockPlan` row's copies' rows
        (``BlockPlan.rows``); a copy taken out of the block (:meth:`copy`)
        carries ``meta["rows"]`` (the whole array) and ``meta["index"]`` (its row).
    """

    state: Any = None
    t: np.ndarray | None = None
    count: int | None = None
    source: str = ""
    seq: int = 0
    wires: tuple | None = None
    key: Hashable = None
    meta: Mapping[str, Any] = field(default_factory=dict)
    rows: Any = None

    def __post_init__(self) -> None:
        if self.t is not None:
            t = np.ascontiguousarray(np.asarray(self.t, dtype=np.float64))
            if t.ndim != 1:
                raise ValueError(f"t must have shape (N,); got {t.shape}")
            if not np.isfinite(t).all():
                raise ValueError("the arrival times of a block must be finite (NaN or infinite times found)")
            if t.size > 1 and np.any(np.diff(t) < 0):
                raise ValueError("the arrival times of a block must be non-decreasing")
            if self.count is not None and int(self.count) != t.size:
                raise ValueError(f"count={self.count} but t has {t.size} times")
            object.__setattr__(self, "t", t)
            object.__setattr__(self, "count", int(t.size))
        elif self.count is None or int(self.count) < 0:
            raise ValueError("a block without times needs count >= 0")
        else:
            object.__setattr__(self, "count", int(self.count))
        if self.rows is not None:
            try:
                n = len(self.rows)
                self.rows[np.zeros(0, np.int64)]  # the scheduler gathers rows by index arrays
            except Exception:
                raise ValueError(
                    f"rows must have a length and take integer-array indexing (a NumPy array, or a dataclass of "
                    f"arrays such as Photons); got {type(self.rows).__name__}"
                ) from None
            if n != self.count:
                raise ValueError(f"rows has {n} entries for a block of {self.count} copies")

    def __len__(self) -> int:
        return int(self.count)  # type: ignore[arg-type]

    @property
    def pair_key(self) -> Hashable:
        return self.source if self.key is None else self.key

    @property
    def n_qubits(self) -> int | None:
        return self.copy(0).n_qubits if len(self) else None

    def stamped(self, t: np.ndarray | float) -> "CopyBlock":
        """The same block with arrival times ``t`` (a scalar: all at once)."""
        arr = np.broadcast_to(np.asarray(t, dtype=np.float64), (len(self),)).copy()
        return CopyBlock(self.state, arr, None, self.source, self.seq, self.wires, self.key, self.meta, self.rows)

    def with_source(self, source: str) -> "CopyBlock":
        return CopyBlock(self.state, self.t, self.count if self.t is None else None, source, self.seq, self.wires, self.key,
                         self.meta, self.rows)

    def copy(self, j: int) -> Copy:
        """Copy ``j`` as a :class:`~qsense.acquisition.memory.Copy` (for the per-copy paths;
        with ``rows``, its ``meta`` adds ``"rows"`` and ``"index": j``)."""
        t = None if self.t is None else float(self.t[j])
        meta = self.meta if self.rows is None else {**self.meta, "rows": self.rows, "index": int(j)}
        return Copy(self.state, t, self.source, self.seq + int(j), self.wires, self.key, meta)


    def copies(self) -> Iterator[Copy]:
        """Every copy, in order (the per-copy fallback; O(N) Python objects)."""
        return (self.copy(j) for j in range(len(self)))


def schedule_segment(
    t: np.ndarray,
    i0: int,
    i1: int,
    f: float,
    cap0: float,
    cap: float,
    wait0: float,
    max_wait: float,
    can_open: bool,
    credit: float,
    has_open: bool,
    open_t: float,
    open_idx: int,
    roles: np.ndarray,
) -> tuple[float, bool, float, int]:
    """The per-copy rule of :meth:`Scheduler.on_arrival` over copies ``i0..i1-1``.

    ``t``: float64 (N,) arrival times; ``roles``: int8 (N,) output (layout in the
    module docstring).  ``f``: the plan's pair fraction; ``cap``/``max_wait``:
    the plan's cap and the memory's ``max_wait`` (``inf`` for none); ``cap0`` /
    ``wait0`` are used instead at copy ``i0`` (the expiry there runs before the
    re-plan, with the previous plan, or was already done by the caller: ``inf``).
    ``can_open``: the memory has a slot for this key.  State in and out:
    ``credit`` (deficit counter), ``has_open`` / ``open_t`` / ``open_idx`` (the
    opener of this key waiting in memory, its arrival time, its index in the
    block or −1 if it was already in memory before the block).

    For every arrival, as ``on_arrival`` does: (1) an opener older than the
    memory's ``max_wait`` is evicted (memory sweep), else one older than the cap
    (``expired_cap``); (2) credit = min(credit + f, 2); (3) a waiting opener is
    closed by this arrival (credit = max(credit − 1, −1)); (4) otherwise if
    f > 0 and credit >= 1 it opens (credit −= 1) or, with no slot, is a shadow
    (``NO_SLOT``); (5) otherwise a shadow.  An evicted pre-block opener
    (``open_idx == -1``) is reported by the caller, which sees ``has_open``
    turn false without a CLOSE at ``i0``.
    """
    for j in range(i0, i1):
        now = t[j]
        c = cap0 if j == i0 else cap
        w = wait0 if j == i0 else max_wait
        if has_open:
            age = now - open_t
            if age > w:
                if open_idx >= 0:
                    roles[open_idx] = EVICT_MEMORY
                has_open = False
            elif age > c:
                if open_idx >= 0:
                    roles[open_idx] = EVICT_CAP
                has_open = False
        credit = min(credit + f, 2.0)
        if has_open:
            roles[j] = CLOSE
            if open_idx >= 0:
                roles[open_idx] = OPEN
            credit = max(credit - 1.0, -1.0)
            has_open = False
        elif f > 0.0 and credit >= 1.0:
            if can_open:
                roles[j] = WAITING
                credit -= 1.0
                has_open = True
                open_t = now
                open_idx = j
            else:
                roles[j] = NO_SLOT
        else:
            roles[j] = SHADOW
    return credit, has_open, open_t, open_idx


_kernel: Callable[..., tuple[float, bool, float, int]] | None = None


def segment_kernel() -> Callable[..., tuple[float, bool, float, int]]:
    """:func:`schedule_segment` compiled with numba (cached on disk), or the
    plain function where numba is missing or ``QSENSE_NO_JIT`` is set."""
    global _kernel
    if _kernel is None:
        try:
            if os.environ.get("QSENSE_NO_JIT"):
                raise ImportError("disabled by QSENSE_NO_JIT")
            from numba import njit

            _kernel = njit(cache=True, nogil=True)(schedule_segment)
        except ImportError:  # pragma: no cover - depends on the environment
            _kernel = schedule_segment
    return _kernel


def finite_or_inf(x: float | None) -> float:
    """``None`` (no limit) as ``inf`` for the kernel."""
    return math.inf if x is None else float(x)
