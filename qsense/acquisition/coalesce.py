"""Micro-batching of per-copy drivers: consecutive copies of one state become one
:class:`~qsense.acquisition.blocks.CopyBlock`.

A driver that yields one :class:`~qsense.acquisition.memory.Copy` per arrival
costs the pipeline ~40 µs of Python per copy (a queue entry, a scheduler
decision and a plan row each); the block path costs well under 1 µs per copy.
:class:`CopyRun` collects a driver's consecutive copies that a block can carry
exactly — the same state object, source, pairing key and wires, no per-copy
``meta``, consecutive ``seq`` and non-decreasing timestamps — and hands them on
as one block, so a per-copy driver gets the block path without asking.

A run ends when the next copy does not fit, when it holds ``limit`` copies,
when the next copy arrives more than ``span`` seconds (of the copies' own
clock) after the run's first one, or when the driver ends or is stopped.  Every
one of these depends on the copy stream alone, never on task scheduling, so a
seeded event-time simulation still gives the same blocks, plans and records on
every run.  (On a wall clock the pipeline's ingest uses the same runs on its
queue instead: copies already waiting there when it gets to them are decided
together, which adds no latency; see :class:`~qsense.acquisition.pipeline.Pipeline`.)  Runs shorter than :data:`MIN_BLOCK` are handed on copy by copy (a
block's fixed cost is larger than a few per-copy decisions).
"""

from __future__ import annotations

import math
import sys

import numpy as np

from .blocks import CopyBlock
from .memory import Copy

__all__ = ["ADDED", "FULL", "MIN_BLOCK", "REFUSED", "CopyRun"]

#: runs shorter than this go on as single copies
MIN_BLOCK = 16

#: what :meth:`CopyRun.offer` did with a copy
ADDED, FULL, REFUSED = 0, 1, 2

#: the latest timestamp a run takes (the largest finite double)
_LATEST = sys.float_info.max


class CopyRun:
    """The open run of one driver (see the module docstring).

    ``limit``: most copies per block (>= 2); ``span``: longest time between a
    run's first and last copy (seconds on the copies' clock; ``inf``: no bound).
    """

    __slots__ = ("copies", "end", "first", "last", "limit", "n", "nxt", "span", "times")

    def __init__(self, limit: int, span: float = math.inf) -> None:
        if int(limit) < 2:
            raise ValueError(f"a run needs a limit of at least 2 copies; got {limit!r}")
        if not span > 0:
            raise ValueError(f"span must be positive; got {span!r}")
        self.limit = int(limit)
        self.span = float(span)
        self.first: Copy | None = None
        self.times: list[float] = []
        self.copies: list[Copy] = []
        self.n = 0
        self.end = math.inf  # latest time a copy may have to join
        self.last = -math.inf
        self.nxt = 0

    def __len__(self) -> int:
        return self.n

    def offer(self, c: Copy, stamp: float | None = None) -> int:
        """Add ``c`` if it continues the open run, or starts one when the run is
        empty: :data:`ADDED`, :data:`FULL` (added, and the run holds ``limit``
        copies: take it) or :data:`REFUSED` (not added; the run is unchanged).
        ``stamp``: the arrival time of a copy without one (``t=None``; the
        pipeline's ingest stamps what it takes from its queue with "now")."""
        f = self.first
        t = c.t if c.t is not None else stamp
        if f is None:
            if t is None or c.meta or not math.isfinite(t):
                return REFUSED
            self.first = f = c
            # finite even for an unbounded span: a later copy at t = inf must not fit either
            self.end = min(t + self.span, _LATEST)
        elif not (
            c.state is f.state
            and c.seq == self.nxt
            and t is not None
            and self.last <= t <= self.end
            and not c.meta
            and c.source == f.source
            and c.key == f.key
            and c.wires == f.wires
        ):
            return REFUSED
        self.times.append(t)
        if self.n < MIN_BLOCK:
            self.copies.append(c)
        self.n += 1
        self.nxt = c.seq + 1
        self.last = t
        return FULL if self.n >= self.limit else ADDED

    def take(self) -> CopyBlock | list[Copy]:
        """The run as a block (or, when short, its copies), and the run emptied."""
        f, n = self.first, self.n
        out: CopyBlock | list[Copy]
        if f is None:
            out = []
        elif n < MIN_BLOCK:
            out = self.copies
        else:
            out = CopyBlock(f.state, np.array(self.times, dtype=np.float64), None, f.source, f.seq, f.wires, f.key)
        self.first = None
        self.times = []
        self.copies = []
        self.n = 0
        self.end = math.inf
        self.last = -math.inf
        return out
