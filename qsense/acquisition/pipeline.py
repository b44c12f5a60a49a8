"""The asynchronous acquisition pipeline: drivers → memory/scheduler → backend →
records → estimators and sinks.

::

    driver ─┐                 ┌────────────┐  plans   ┌─────────┐ records ┌──────────┐
    driver ─┼─▶ arrivals ───▶ │ scheduler  │ ───────▶ │ backend │ ──────▶ │ consumer │─▶ estimators
    driver ─┘   (bounded)     │ + memory   │ (bounded)│ workers │(bounded)│          │─▶ sinks
                              └────────────┘          └─────────┘         └──────────┘

* A **driver** is any async iterable of :class:`~qsense.acquisition.memory.Copy` (bare
  arrays are wrapped).  :func:`poisson_copies` is the simulated one.
* The **ingest** task hands each arrival to the :class:`~qsense.acquisition.scheduler.Scheduler`
  (which uses the memory) and batches the resulting measurements into
  :class:`~qsense.acquisition.backends.MeasurementPlan` s of up to ``batch_size`` items,
  flushed at latest ``flush_interval`` seconds (wall time) after their first item,
  or, with ``flush_clock="event"``, of event time (then plan boundaries, and so
  every downstream random draw, depend on the copies only, not on scheduling).
* **Backend workers** measure plans; the **consumer** folds records into the
  estimators (anything with ``update(batch)``; an ``accepts(kind)`` method, if
  present, filters by record kind) and awaits each **sink** (``async
  sink(batch)``, e.g. a ZeroMQ publisher).

All queues are bounded, so a slow backend or sink slows the drivers
(backpressure).  A driver that cannot pause (a photon stream) should use
``on_arrival_full="drop"``: arrivals that find the queue full are dropped and
counted.  Shutdown is structured (``asyncio.TaskGroup``): when every driver has
finished (or :meth:`Pipeline.stop` was called) the ingest drains the queue and
the scheduler (openers still waiting are evicted, counted), workers finish the
queued plans and the consumer the queued records; cancelling :meth:`Pipeline.run`
cancels every task it started and waits for them.  An exception in one driver
is logged and counted and the other drivers go on; errors in a backend call, an
estimator or a sink are logged and counted too, never silent.

Coalescing (default): consecutive copies of one state from a per-copy driver
are handed to the scheduler as one :class:`~qsense.acquisition.blocks.CopyBlock`
(:mod:`qsense.acquisition.coalesce`; cut at the driver in event time, so
reproducibly, and from the queued backlog on a wall clock); ``coalesce=0``
restores one decision per copy.  See the ``coalesce`` parameter and
docs/pipeline.md.

Blocks: a driver may also yield :class:`~qsense.acquisition.blocks.CopyBlock` s (many
copies of one state with an array of arrival times; :func:`poisson_blocks`).
A block is one queue entry; the scheduler decides all its copies at once
(:meth:`~qsense.acquisition.scheduler.Scheduler.on_block`) and its measurements go to the
backend as :class:`~qsense.acquisition.backends.BlockPlan` s (one per family and block,
whatever ``batch_size`` says: a block is already a batch), measured with
``backend.measure_block`` where the backend has it and as the equivalent
per-copy plan otherwise.  Counters and the accounting identity are the same;
``on_arrival_full="drop"`` drops a whole block (its copies are counted).

Time: with a clock that has ``advance_to`` (:class:`~qsense.acquisition.memory.ManualClock`)
the pipeline runs in *event time*: the clock jumps to each copy's timestamp, so
a simulation of 10^4 copies/s with T2 = 1 ms runs as fast as the CPU allows and
is exactly reproducible.  Otherwise (:class:`~qsense.acquisition.memory.MonotonicClock`)
copies are stamped on arrival and waits are wall-clock waits.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import (
    Any,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Protocol,
    Sequence,
    runtime_checkable,
)

import numpy as np

from qsense.records import BellBatch, ShadowBatch

from .backends import BlockPlan, MeasurementBackend, MeasurementPlan
from .blocks import CopyBlock
from .coalesce import ADDED, FULL, MIN_BLOCK, REFUSED, CopyRun
from .memory import Clock, Copy, Counters, MonotonicClock, QuantumMemory
from .scheduler import Item, Scheduler

__all__ = ["Pipeline", "PipelineReport", "Sink", "poisson_copies", "poisson_blocks", "as_copy", "CopyBlock"]

log = logging.getLogger(__name__)

Record = ShadowBatch | BellBatch


@runtime_checkable
class Sink(Protocol):
    """Where records go besides the estimators: ``await sink(batch)``."""

    def __call__(self, batch: Record) -> Awaitable[None]: ...


@dataclass
class PipelineReport:
    """What a run did.  ``counters`` merges the pipeline's, the scheduler's
    (``scheduler.*``) and the memory's (``memory.*``); ``errors`` lists
    ``(where, message)``; ``unaccounted`` is arrivals not explained by a
    measurement, an eviction, a drop or a failure (0 unless there is a bug)."""

    counters: dict[str, int]
    errors: list[tuple[str, str]]
    elapsed: float
    unaccounted: int
    plans: list[str] = field(default_factory=list)

    def __getitem__(self, key: str) -> int:
        return self.counters.get(key, 0)


def as_copy(obj: Any, source: str) -> Copy:
    """A driver's item as a :class:`Copy` (bare states are wrapped)."""
    if isinstance(obj, Copy):
        return obj if obj.source else Copy(obj.state, obj.t, source, obj.seq, obj.wires, obj.key, obj.meta)
    return Copy(state=obj, source=source)


#: exponential gaps drawn per NumPy call by poisson_copies
_DRAW_CHUNK = 1024


async def poisson_copies(
    state: Any,
    rate: float,
    count: int,
    *,
    seed: Any = None,
    source: str = "sim",
    start: float = 0.0,
    realtime: bool = False,
    key: Any = None,
    wires: tuple | None = None,
    block: int | None = None,
) -> AsyncIterator[Copy]:
    """A simulated driver: ``count`` copies of ``state`` arriving as a Poisson
    process of ``rate`` copies/s.

    ``state`` is an array (the same object for every copy, so that backends can
    batch them) or a callable ``state(i) -> array`` for a changing source.
    Event time (default): copies carry timestamps ``start + cumulative Exp(rate)``
    and nothing sleeps; ``realtime=True`` sleeps between copies and leaves the
    timestamp to the pipeline's clock.  ``block=N`` yields
    :class:`~qsense.acquisition.blocks.CopyBlock` s of up to N copies instead
    (:func:`poisson_blocks`; the same arrival times for the same seed).
    """
    if block is not None:
        async for b in poisson_blocks(state, rate, count, block=block, seed=seed, source=source, start=start, realtime=realtime, key=key, wires=wires):
            yield b  # type: ignore[misc]
        return
    if not rate > 0:
        raise ValueError(f"rate must be positive; got {rate!r}")
    rng = np.random.default_rng(seed)
    t = float(start)
    n = int(count)
    changing = callable(state)
    i = 0
    while i < n:
        # the gaps in chunks: NumPy draws the same exponentials one at a time or as
        # an array, so the times are those of one draw per copy, at a fraction of the cost
        for dt in rng.exponential(1.0 / rate, size=min(_DRAW_CHUNK, n - i)).tolist():
            t += dt
            s = state(i) if changing else state
            if realtime:
                await asyncio.sleep(dt)
                yield Copy(state=s, t=None, source=source, seq=i, key=key, wires=wires)
            else:
                yield Copy(state=s, t=t, source=source, seq=i, key=key, wires=wires)
            i += 1


async def poisson_blocks(
    state: Any,
    rate: float,
    count: int,
    *,
    block: int = 4096,
    seed: Any = None,
    source: str = "sim",
    start: float = 0.0,
    realtime: bool = False,
    key: Any = None,
    wires: tuple | None = None,
) -> AsyncIterator[CopyBlock]:
    """A simulated block driver: ``count`` copies of ``state`` arriving as a
    Poisson process of ``rate`` copies/s, delivered as
    :class:`~qsense.acquisition.blocks.CopyBlock` s of ``block`` copies (the last one shorter).

    ``state``: an array shared by every copy, or a callable ``state(b) -> array``
    giving the state of block ``b`` (a source that changes between blocks).
    Arrival times are drawn as one ``Exp(rate)`` array per block; they equal
    :func:`poisson_copies`' for the same seed (NumPy draws the same exponentials
    one at a time or as an array).  ``realtime=True`` sleeps until each block's
    last arrival and lets the pipeline stamp the whole block on arrival.
    """
    if not rate > 0:
        raise ValueError(f"rate must be positive; got {rate!r}")
    if int(block) < 1:
        raise ValueError(f"block must be >= 1; got {block!r}")
    rng = np.random.default_rng(seed)
    t = float(start)
    done = 0
    b = 0
    while done < int(count):
        m = min(int(block), int(count) - done)
        # arrival times: start + cumulative Exp(rate), carried across blocks
        times = t + np.cumsum(rng.exponential(1.0 / rate, size=m))
        s = state(b) if callable(state) else state
        if realtime:
            await asyncio.sleep(float(times[-1] - t))
            yield CopyBlock(s, None, m, source, done, wires, key)
        else:
            yield CopyBlock(s, times, None, source, done, wires, key)
        t = float(times[-1])
        done += m
        b += 1


_END = object()


class Pipeline:
    """Wire drivers, a memory + scheduler, a backend, estimators and sinks.

    Parameters
    ----------
    drivers:
        ``{name: async iterable of Copy}`` (or a sequence; named ``driver0``...).
    memory, scheduler, backend:
        The :class:`~qsense.acquisition.memory.QuantumMemory` the scheduler uses, the
        :class:`~qsense.acquisition.scheduler.Scheduler`, and a
        :class:`~qsense.acquisition.backends.MeasurementBackend`.
    estimators:
        Objects with ``update(batch)`` (``ShadowEstimator``, ``BellEstimator``,
        ``ShadowPurity``, ``TargetSet``...).  Known core estimators receive only
        the record kind they understand; others may define ``accepts(kind)``.
    sinks:
        Async callables ``await sink(batch)``, called in order for every batch.
    clock:
        Default: the memory's clock.  A clock with ``advance_to`` means event time.
    batch_size, flush_interval:
        Items per measurement plan, and the longest time a partial plan waits
        before it is sent.
    flush_clock:
        What ``flush_interval`` is measured on: ``"wall"`` (default; the event
        loop's clock, so a slow consumer still gets partial plans) or
        ``"event"`` (the pipeline clock, which must have ``advance_to``): a
        partial plan is flushed when a copy arrives ``flush_interval`` of event
        time after its first item, and idle ticks never flush.  Plans are then
        a function of the copies' timestamps alone, which makes a seeded
        simulation reproducible batch for batch.
    arrival_queue, plan_queue, record_queue:
        Bounds of the three queues.  The arrivals queue also holds at most
        ``max(arrival_queue, 2 * coalesce)`` copies (a block counts its copies),
        so drivers that never sleep cannot run far ahead of the scheduler.
    on_arrival_full:
        ``"block"`` (backpressure to the drivers) or ``"drop"`` (count and drop).
    workers:
        Concurrent backend calls.
    tick_interval:
        How often (s, wall time) expiries and partial plans are checked when no
        copy arrives.
    name:
        Prefix of the records' ``source`` (``"<name>.shadow"``, ``"<name>.bell"``).
    coalesce:
        Micro-batching of per-copy drivers (:mod:`qsense.acquisition.coalesce`),
        on by default: consecutive copies of one state (the same object, source,
        key and wires, no ``meta``, consecutive ``seq``) go to the scheduler as
        one :class:`~qsense.acquisition.blocks.CopyBlock` of up to ``coalesce``
        copies (default 4096), 10-50x cheaper per copy than one decision each.
        (Default off where the scheduler would hand blocks back copy by copy:
        a memory without bulk accounting, e.g. hardware, or ``salvage=True``.)
        Where the runs are cut (:attr:`coalesce_at`): in event time with
        ``on_arrival_full="block"``, ``"driver"``: each driver's copies with
        their own timestamps are collected as they are yielded, so blocks
        depend on the copies alone (reproducible); otherwise ``"ingest"``: the
        copies already waiting in the arrivals queue when the ingest gets to
        them are taken together (no copy waits for a run to fill; a live
        source gets blocks exactly when it outruns one-by-one handling).
        ``0`` (or ``False``) turns it off: every copy its own scheduler
        decision.
    coalesce_span:
        With ``coalesce_at == "driver"``, a run also ends when a copy arrives
        more than this many seconds (of the copies' clock) after the run's
        first copy.  Default: no bound.  Runs end, too, at a copy that does not
        fit and when the driver ends or is stopped.
    """

    def __init__(
        self,
        drivers: Mapping[str, AsyncIterable[Any]] | Sequence[AsyncIterable[Any]],
        memory: QuantumMemory,
        scheduler: Scheduler,
        backend: MeasurementBackend,
        *,
        estimators: Iterable[Any] = (),
        sinks: Iterable[Callable[[Record], Awaitable[None]]] = (),
        clock: Clock | None = None,
        batch_size: int = 256,
        flush_interval: float = 0.02,
        flush_clock: str = "wall",
        arrival_queue: int = 1024,
        plan_queue: int = 8,
        record_queue: int = 64,
        on_arrival_full: str = "block",
        workers: int = 1,
        tick_interval: float = 0.01,
        name: str = "pipeline",
        coalesce: int | None = None,
        coalesce_span: float | None = None,
    ) -> None:
        if isinstance(drivers, Mapping):
            self.drivers = dict(drivers)
        else:
            self.drivers = {f"driver{i}": d for i, d in enumerate(drivers)}
        if on_arrival_full not in ("block", "drop"):
            raise ValueError(f"on_arrival_full must be 'block' or 'drop'; got {on_arrival_full!r}")
        if batch_size < 1 or workers < 1:
            raise ValueError("batch_size and workers must be >= 1")
        self.memory = memory
        self.scheduler = scheduler
        self.backend = backend
        self.estimators = list(estimators)
        self.sinks = list(sinks)
        self.clock: Clock = clock or getattr(memory, "clock", None) or MonotonicClock()
        self.event_time = hasattr(self.clock, "advance_to")
        self.batch_size = int(batch_size)
        self.flush_interval = float(flush_interval)
        if flush_clock not in ("wall", "event"):
            raise ValueError(f"flush_clock must be 'wall' or 'event'; got {flush_clock!r}")
        if flush_clock == "event" and not self.event_time:
            raise ValueError("flush_clock='event' needs an event-time clock (one with advance_to, e.g. ManualClock)")
        self.flush_clock = flush_clock
        self.tick_interval = float(tick_interval)
        self.on_arrival_full = on_arrival_full
        self.workers = int(workers)
        self.name = name
        if isinstance(coalesce, bool):  # True: the default, False: off
            coalesce = None if coalesce else 0
        if coalesce is None:
            # only where the scheduler can take the block path: otherwise it would
            # split every block back into copies (Scheduler.on_block's fallback)
            block_ok = hasattr(memory, "account_block") and not getattr(scheduler, "salvage", False)
            coalesce = 4096 if block_ok else 0
        if not isinstance(coalesce, (int, np.integer)) or coalesce < 0:
            raise ValueError(f"coalesce must be None or an int >= 0 (copies per block; 0 = off); got {coalesce!r}")
        #: most copies per coalesced block (0 or 1: every copy goes on alone)
        self.coalesce = int(coalesce)
        span = math.inf if coalesce_span is None else float(coalesce_span)
        if not span > 0:
            raise ValueError(f"coalesce_span must be positive seconds; got {coalesce_span!r}")
        self.coalesce_span = span
        #: where runs are cut: "driver" (deterministic, event time), "ingest" (the queue's backlog) or None (off)
        self.coalesce_at: str | None = None
        if self.coalesce >= 2:
            self.coalesce_at = "driver" if self.event_time and on_arrival_full == "block" else "ingest"
        self._qsizes = (int(arrival_queue), int(plan_queue), int(record_queue))
        self.counters = Counters()
        #: wall-clock pacing of the arrivals: (monotonic seconds of the first arrival, of
        #: the latest, copies that arrived after the first item), or None before any
        self.arrival_span: tuple[float, float, int] | None = None
        self.errors: list[tuple[str, str]] = []
        self._stop = asyncio.Event()
        self._drivers_done = asyncio.Event()
        self._driver_tasks: list[asyncio.Task] = []
        self._seq = {"shadow": 0, "bell": 0}
        self._plan_seq = 0
        self._running = False
        # copies (not entries) in the arrivals queue: with coalescing one entry can hold
        # thousands, and drivers that never sleep would fill it and starve the loop
        self._queued = 0
        self._copy_room = max(int(arrival_queue), 2 * self.coalesce)
        self._room = asyncio.Event()
        self._room.set()

    # -- control -------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the pipeline to finish: drivers are cancelled, everything already
        arrived is measured and folded in, then :meth:`run` returns."""
        self._stop.set()
        for t in self._driver_tasks:
            t.cancel()

    def _error(self, where: str, exc: BaseException) -> None:
        self.errors.append((where, f"{type(exc).__name__}: {exc}"))
        log.error("%s: error in %s: %s", self.name, where, exc, exc_info=exc)

    # -- tasks ------------------------------------------------------------------------------
    async def _put(self, name: str, item: Copy | CopyBlock, m: int, arrivals: asyncio.Queue) -> None:
        """Count ``m`` arrived copies of driver ``name`` and queue them (or drop them)."""
        self.counters["arrived"] += m
        self.counters[f"arrived.{name}"] += m
        self._mark_arrival(m)
        if self.on_arrival_full == "block":
            try:
                await self._wait_put(item, m, arrivals)
            except asyncio.CancelledError:
                if self._stop.is_set():
                    # stop(): the ingest drains until every driver is done, so these
                    # copies, which did arrive, still get in (a second cancel drops them)
                    try:
                        await self._wait_put(item, m, arrivals)
                    except asyncio.CancelledError:
                        self.counters["dropped_arrival"] += m
                        raise
                    raise
                # run() cancelled while waiting for room: these copies never got in
                self.counters["dropped_arrival"] += m
                raise
        else:
            self._put_nowait(item, m, arrivals)

    def _refuse_time(self, name: str) -> None:
        self.counters["rejected_nonfinite_time"] += 1
        if self.counters["rejected_nonfinite_time"] == 1:
            log.warning("%s: driver %r yielded a copy with a NaN or infinite timestamp: refused and counted "
                        "in rejected_nonfinite_time (logged once)", self.name, name)

    def _mark_arrival(self, m: int) -> None:
        now = time.monotonic()
        span = self.arrival_span
        self.arrival_span = (now, now, 0) if span is None else (span[0], now, span[2] + m)

    def _put_nowait(self, item: Any, m: int, arrivals: asyncio.Queue) -> None:
        """Queue ``item`` (``m`` copies) if there is room, else count its copies dropped."""
        try:
            arrivals.put_nowait(item)
        except asyncio.QueueFull:
            self.counters["dropped_arrival"] += m
        else:
            self._queued += m

    async def _wait_put(self, item: Any, m: int, arrivals: asyncio.Queue) -> None:
        # at most _copy_room copies queued (one oversized block may go in alone)
        while self._queued and self._queued + m > self._copy_room:
            self._room.clear()
            await self._room.wait()
        await arrivals.put(item)
        self._queued += m

    def _taken(self, item: Any) -> Any:
        """Book ``item`` out of the arrivals queue (wakes drivers waiting for room)."""
        self._queued -= len(item) if isinstance(item, CopyBlock) else 1
        if self._queued <= self._copy_room // 2:
            self._room.set()
        return item

    def _take_coalesced(self, run: CopyRun) -> CopyBlock | list[Copy]:
        """``run.take()``, a block counted as coalesced."""
        out = run.take()
        if isinstance(out, CopyBlock):
            self.counters["coalesced_blocks"] += 1
            self.counters["coalesced_copies"] += len(out)
        return out

    async def _emit(self, name: str, run: CopyRun, arrivals: asyncio.Queue) -> None:
        """Queue the open run: one block, or its few copies one by one."""
        out = self._take_coalesced(run)
        if isinstance(out, CopyBlock):
            await self._put(name, out, len(out), arrivals)
        else:
            for i, c in enumerate(out):
                try:
                    await self._put(name, c, 1, arrivals)
                except asyncio.CancelledError:
                    # stopped while waiting for room: the rest of the run never got in either
                    rest = len(out) - i - 1
                    self.counters["arrived"] += rest
                    self.counters[f"arrived.{name}"] += rest
                    self.counters["dropped_arrival"] += rest
                    raise

    def _emit_nowait(self, name: str, run: CopyRun, arrivals: asyncio.Queue) -> None:
        """On stop: what the open run holds gets in if there is room, else is counted dropped."""
        out = run.take()
        for item in [out] if isinstance(out, CopyBlock) else out:
            m = len(item) if isinstance(item, CopyBlock) else 1
            self.counters["arrived"] += m
            self.counters[f"arrived.{name}"] += m
            self._put_nowait(item, m, arrivals)

    async def _drive(self, name: str, driver: AsyncIterable[Any], arrivals: asyncio.Queue) -> None:
        run = CopyRun(self.coalesce, self.coalesce_span) if self.coalesce_at == "driver" else None
        try:
            async for obj in driver:
                if isinstance(obj, CopyBlock):
                    if run is not None and run.n:
                        await self._emit(name, run, arrivals)
                    await self._put(name, obj if obj.source else obj.with_source(name), len(obj), arrivals)
                    continue
                copy = obj if type(obj) is Copy and obj.source else as_copy(obj, name)
                if copy.t is not None and not math.isfinite(copy.t):
                    # refused before it is scheduled: in a plan it would fail the whole plan's
                    # records (a record batch refuses non-finite timestamps), losing its neighbours
                    self._refuse_time(name)
                    continue
                if run is None:
                    await self._put(name, copy, 1, arrivals)
                    continue
                r = run.offer(copy)
                if r == ADDED:
                    continue
                if r == FULL:
                    await self._emit(name, run, arrivals)
                    continue
                # refused: the open run ends here; this copy starts the next one or goes alone
                if run.n:
                    await self._emit(name, run, arrivals)
                if run.offer(copy) == REFUSED:
                    await self._put(name, copy, 1, arrivals)
            if run is not None and run.n:
                await self._emit(name, run, arrivals)
            self.counters["drivers_finished"] += 1
            log.info("%s: driver %r finished", self.name, name)
        except asyncio.CancelledError:
            self.counters["drivers_stopped"] += 1
            log.info("%s: driver %r stopped", self.name, name)
            if run is not None and run.n:
                if self._stop.is_set() and self.on_arrival_full == "block":
                    # stop(): the ingest drains until every driver is done, so the
                    # copies of the open run, which did arrive, get measured
                    await self._emit(name, run, arrivals)
                else:  # run() cancelled: nothing will drain the queue any more
                    self._emit_nowait(name, run, arrivals)
            if not self._stop.is_set():
                raise
        except Exception as exc:  # one driver's failure must not stop the others
            self.counters["driver_errors"] += 1
            self._error(f"driver {name!r}", exc)
            if run is not None and run.n:
                await self._emit(name, run, arrivals)  # the copies it yielded before failing did arrive
        finally:
            aclose = getattr(driver, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception:  # pragma: no cover - a driver that cannot close
                    pass

    async def _watch_drivers(self, tasks: list[asyncio.Task]) -> None:
        # gather with return_exceptions: _drive already reports errors
        await asyncio.gather(*tasks, return_exceptions=True)
        self._drivers_done.set()

    async def _flush(self, family: str, buf: list[Item], plans: asyncio.Queue) -> None:
        if not buf:
            return
        plan = MeasurementPlan(family, tuple(buf), self._plan_seq)
        self._plan_seq += 1
        buf.clear()
        self.counters["plans"] += 1
        await plans.put(plan)

    async def _ingest(self, arrivals: asyncio.Queue, plans: asyncio.Queue) -> None:
        loop = asyncio.get_running_loop()
        # the clock partial plans age on: wall (loop) time, or the event clock, which
        # moves only with the copies, so flushes do not depend on task scheduling
        age_clock: Callable[[], float] = self.clock if self.flush_clock == "event" else loop.time
        bufs: dict[str, list[Item]] = {"shadow": [], "bell": []}
        born: dict[str, float] = {"shadow": 0.0, "bell": 0.0}

        async def route(items: list[Item]) -> None:
            for it in items:
                fam = "shadow" if len(it) == 1 else "bell"
                if not bufs[fam]:
                    born[fam] = age_clock()
                bufs[fam].append(it)
                if len(bufs[fam]) >= self.batch_size:
                    await self._flush(fam, bufs[fam], plans)

        async def flush_aged() -> None:
            now = age_clock()
            for fam in ("shadow", "bell"):
                if bufs[fam] and now - born[fam] >= self.flush_interval:
                    await self._flush(fam, bufs[fam], plans)

        # runs cut on the queue (coalesce_at == "ingest"): items taken but not yet handled
        todo: deque[Any] = deque()
        run = CopyRun(self.coalesce) if self.coalesce_at == "ingest" else None
        while True:
            try:
                copy = todo.popleft() if todo else self._taken(arrivals.get_nowait())
            except asyncio.QueueEmpty:
                if self._drivers_done.is_set():
                    break
                try:
                    # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a
                    # cancellation that lands as the get completes, and run() then never ends
                    async with asyncio.timeout(self.tick_interval):
                        copy = self._taken(await arrivals.get())
                except TimeoutError:
                    if not self.event_time:
                        await route(await self.scheduler.on_tick(self.clock()))
                    await flush_aged()
                    continue
            if run is not None and not todo and type(copy) is Copy and arrivals.qsize() >= MIN_BLOCK - 1:
                todo.extend(self._take_run(copy, arrivals, run))
                copy = todo.popleft()
            if isinstance(copy, CopyBlock):
                await self._ingest_block(copy, route, plans)
                await flush_aged()
                continue
            if self.event_time and copy.t is not None:
                self.clock.advance_to(copy.t)  # type: ignore[attr-defined]
            now = self.clock()
            if copy.t is None:
                copy = copy.stamped(now)
            await route(await self.scheduler.on_arrival(copy, now))
            await flush_aged()
        # drained: openers still waiting will never be paired
        await route(await self.scheduler.drain(self.clock()))
        for fam in ("shadow", "bell"):
            await self._flush(fam, bufs[fam], plans)
        # sentinels only on a normal finish: when cancelled, every task is being
        # cancelled too and a put into a full queue could wait forever
        for _ in range(self.workers):
            await plans.put(_END)

    def _take_run(self, first: Copy, arrivals: asyncio.Queue, run: CopyRun) -> list[Any]:
        """``first`` and the queued copies that continue it, as one block (or,
        when short, the copies), then the first queued item that did not fit.
        Copies without a timestamp are stamped now, as one by one they would be
        (within microseconds).  On a wall clock a copy *with* a timestamp goes
        on alone: one by one, its pair is released at the ingest's "now", while
        a block would release it at the closer's own timestamp."""
        now = self.clock()
        own_times = self.event_time
        if not (own_times or first.t is None) or run.offer(first, now) == REFUSED:
            return [first]
        held: list[Any] = []
        while True:
            try:
                c = self._taken(arrivals.get_nowait())
            except asyncio.QueueEmpty:
                break
            r = run.offer(c, now) if type(c) is Copy and (own_times or c.t is None) else REFUSED
            if r == REFUSED:
                held.append(c)
                break
            if r == FULL:
                break
        out = self._take_coalesced(run)
        return [out, *held] if isinstance(out, CopyBlock) else [*out, *held]

    async def _ingest_block(self, block: CopyBlock, route: Callable[[list[Item]], Awaitable[None]], plans: asyncio.Queue) -> None:
        """One block through the scheduler: per-copy items are routed as usual,
        block plans go to the workers as they are."""
        if block.t is None:
            block = block.stamped(self.clock())
        elif self.event_time and len(block):
            self.clock.advance_to(float(block.t[0]))  # type: ignore[attr-defined]
        res = await self.scheduler.on_block(block)
        await route(res.items)
        for bp in res.plans:
            self.counters["plans"] += 1
            self.counters["block_plans"] += 1
            await plans.put(dataclasses.replace(bp, seq=self._plan_seq))
            self._plan_seq += 1
        if self.event_time and len(block):
            self.clock.advance_to(float(block.t[-1]))  # type: ignore[attr-defined]

    async def _measure(self, plans: asyncio.Queue, records: asyncio.Queue, done: list[int]) -> None:
        while True:
            plan = await plans.get()
            if plan is _END:
                break
            try:
                if isinstance(plan, BlockPlan):
                    measure_block = getattr(self.backend, "measure_block", None)
                    batches = await (measure_block(plan) if measure_block is not None else self.backend.measure(plan.to_plan()))
                else:
                    batches = await self.backend.measure(plan)
            except Exception as exc:
                self.counters["plans_failed"] += 1
                self.counters[f"copies_failed.{plan.family}"] += plan.copies
                self._error(f"backend {getattr(self.backend, 'name', '?')} plan {plan.seq}", exc)
                continue
            rows = 0
            for b in batches:
                fam = b.kind
                src = f"{self.name}.{fam}"
                b = b.with_meta(source=src, seq=self._seq[fam])
                self._seq[fam] += 1
                rows += b.T
                self.counters[f"records.{fam}"] += b.T
                self.counters["record_batches"] += 1
                await records.put(b)
            if rows != len(plan):
                # a backend that returns fewer rows than items loses copies: count it
                self.counters[f"copies_failed.{plan.family}"] += (len(plan) - rows) * (plan.copies // max(len(plan), 1))
                self._error(f"backend plan {plan.seq}", RuntimeError(f"{rows} records for {len(plan)} items"))
        done[0] += 1
        if done[0] == self.workers:
            await records.put(_END)

    def _wants(self, est: Any, kind: str) -> bool:
        accepts = getattr(est, "accepts", None)
        if accepts is not None:
            return bool(accepts(kind))
        from qsense.estimators.bell import BellEstimator
        from qsense.estimators.purity import ShadowPurity
        from qsense.estimators.shadow import ShadowEstimator

        if isinstance(est, (ShadowEstimator, ShadowPurity)):
            return kind == "shadow"
        if isinstance(est, BellEstimator):
            return kind == "bell"
        return True

    async def _consume(self, records: asyncio.Queue) -> None:
        while True:
            batch = await records.get()
            if batch is _END:
                break
            for est in self.estimators:
                if not self._wants(est, batch.kind):
                    continue
                try:
                    est.update(batch)
                except Exception as exc:
                    self.counters["estimator_errors"] += 1
                    self._error(f"estimator {type(est).__name__}", exc)
            for sink in self.sinks:
                try:
                    await sink(batch)
                    self.counters["sink_batches"] += 1
                except Exception as exc:
                    self.counters["sink_errors"] += 1
                    self._error(f"sink {getattr(sink, '__name__', type(sink).__name__)}", exc)
            self.counters["records_consumed"] += batch.T

    # -- running -------------------------------------------------------------------------------
    async def run(self, duration: float | None = None) -> PipelineReport:
        """Run until every driver is exhausted (or ``stop()``, or ``duration``
        seconds of wall time), then drain; returns a :class:`PipelineReport`."""
        if self._running:
            raise RuntimeError("this pipeline is already running")
        self._running = True
        start = time.perf_counter()
        aq, pq, rq = self._qsizes
        arrivals: asyncio.Queue = asyncio.Queue(aq)
        plans: asyncio.Queue = asyncio.Queue(pq)
        records: asyncio.Queue = asyncio.Queue(rq)
        self._queued = 0  # a fresh arrivals queue
        self._room = asyncio.Event()
        self._room.set()
        done = [0]
        try:
            async with asyncio.TaskGroup() as tg:
                self._driver_tasks = [
                    tg.create_task(self._drive(name, d, arrivals), name=f"{self.name}.driver.{name}")
                    for name, d in self.drivers.items()
                ]
                if self._stop.is_set():
                    self.stop()
                tg.create_task(self._watch_drivers(self._driver_tasks), name=f"{self.name}.watch")
                tg.create_task(self._ingest(arrivals, plans), name=f"{self.name}.ingest")
                for i in range(self.workers):
                    tg.create_task(self._measure(plans, records, done), name=f"{self.name}.worker{i}")
                tg.create_task(self._consume(records), name=f"{self.name}.consume")
                if duration is not None:
                    tg.create_task(self._timer(duration), name=f"{self.name}.timer")
        finally:
            self._running = False
            self._driver_tasks = []
        return self.report(time.perf_counter() - start)

    async def _timer(self, duration: float) -> None:
        try:
            await asyncio.wait_for(self._drivers_done.wait(), duration)
        except TimeoutError:
            log.info("%s: duration %.3g s reached; stopping", self.name, duration)
            self.stop()

    def report(self, elapsed: float = math.nan) -> PipelineReport:
        """Counters so far, with the accounting check."""
        c = dict(self.counters.snapshot())
        for k, v in self.scheduler.counters.snapshot().items():
            c[f"scheduler.{k}"] = v
        mem = getattr(self.memory, "counters", None)
        if mem is not None:
            for k, v in mem.snapshot().items():
                c[f"memory.{k}"] = v
        evicted = sum(v for k, v in c.items() if k.startswith("memory.evicted_"))
        measured = c.get("scheduler.shadow_copies", 0) + c.get("scheduler.bell_copies", 0)
        waiting = len(self.memory) if hasattr(self.memory, "__len__") else 0
        unaccounted = c.get("arrived", 0) - (measured + evicted + c.get("dropped_arrival", 0) + waiting)
        # measured copies must all come back as records or be counted as failed
        failed = c.get("copies_failed.shadow", 0) + c.get("copies_failed.bell", 0)
        rec = c.get("records.shadow", 0) + 2 * c.get("records.bell", 0)
        in_flight = measured - rec - failed
        c["lost"] = evicted + c.get("dropped_arrival", 0) + failed
        c["in_flight"] = in_flight
        plans = [p.describe() for _, p in self.scheduler.history[-3:]]
        return PipelineReport(c, list(self.errors), elapsed, unaccounted + in_flight, plans)
