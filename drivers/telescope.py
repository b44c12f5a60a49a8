"""Async driver: heralded photons from a simulated telescope array, as a stream of copies.

:class:`TelescopeDriver` turns a :class:`qsense.sims.telescope.TelescopeSim` into an
async iterable for :class:`qsense.acquisition.pipeline.Pipeline`.  By default it
yields :class:`qsense.acquisition.blocks.CopyBlock` s (the block path: one queue
entry, one scheduler scan and one sampler call per family for up to ``block``
photons); ``block=0`` (or :meth:`TelescopeDriver.copies`) yields one
:class:`qsense.acquisition.memory.Copy` per photon instead.

* photons are generated in chunks of ``chunk_time`` seconds of *simulation* time
  (arrival times, dark counts and the atmospheric piston random walk, see
  :mod:`qsense.sims.telescope`), the same chunks on both paths, so a seeded
  driver gives the same arrivals whichever it yields;
* a block holds the photons of ``block_time`` seconds of simulation time (whole
  chunks), split into blocks of at most ``block`` copies.  Its ``state`` is the
  simulation object, ``t`` the arrival times (simulation clock), ``wires`` the M
  memory qubits and ``rows`` the block's :class:`qsense.sims.telescope.Photons`
  (row j = copy j: arrival time, dark-count flag and site, piston phases),
  which the scheduler gathers into each ``BlockPlan`` and
  :meth:`qsense.sims.telescope.TelescopeBackend.measure_block` measures.  Block
  boundaries depend on the seed alone (never on the event loop);
* per copy, each photon's ``Copy`` has ``meta = {"photons": chunk, "index": i}``,
  which :class:`qsense.sims.telescope.TelescopeBackend` reads;
* ``rate`` (copies per wall-clock second) paces the stream: the driver sleeps
  so that wall time follows simulation time scaled by ``rate / sim.herald_rate``
  (``rate=None`` runs as fast as the consumer takes copies, for event-time
  simulation).  Per copy, pacing is checked once per ``tick`` of wall time; a
  block is yielded when its last photon is due.

The timestamps are on the simulation clock, so the pipeline runs in event time
(``ManualClock``), as the demo does.

``photon_batches()`` yields the raw :class:`qsense.sims.telescope.Photons` chunks with
the same pacing, for callers that measure directly.

Reproducibility: the simulation has one random generator, which the backend also
draws measurement outcomes from.  Paced in wall time, the driver generates its
next chunk whenever the event loop gets to it, so arrivals and outcomes would
interleave on that generator in an order set by task scheduling, and a fixed
seed would not fix the result.  With ``seed`` the driver generates arrivals
(times, dark counts, pistons) from a generator of its own, leaving
``sim.rng`` to the backend: each stream is then a function of its seed and of
the order of the draws on it alone.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any, AsyncIterator

import numpy as np

from qsense.acquisition.blocks import CopyBlock
from qsense.acquisition.memory import Copy

__all__ = ["TelescopeDriver"]

log = logging.getLogger(__name__)


def _take(pending: list[Any], n: int) -> Any:
    """The first ``n`` photons of the ``pending`` chunks, removed from them: a view of
    the first chunk when it holds them (the usual case at high rates), else joined."""
    first = pending[0]
    if len(first) >= n:
        if len(first) == n:
            pending.pop(0)
        else:
            pending[0] = first[n:]
        return first[:n]
    parts, got = [], 0
    while got < n:
        p = pending[0]
        k = min(len(p), n - got)
        parts.append(p[:k])
        got += k
        if k == len(p):
            pending.pop(0)
        else:
            pending[0] = p[k:]
    return type(first).concatenate(parts)


class TelescopeDriver:
    """Stream heralded photons from a telescope simulation.

    Parameters
    ----------
    sim:
        a :class:`qsense.sims.telescope.TelescopeSim` (its generator drives arrivals).
    rate:
        copies per wall-clock second (default: the simulation's herald rate, i.e.
        real time); ``None`` with ``realtime=False`` means no pacing at all.
    duration:
        stop after this many seconds of simulation time (default: never).
    count:
        stop after this many copies (default: never).
    realtime:
        pace the stream in wall time (default True).
    chunk_time:
        simulation seconds generated per chunk.
    source, key:
        ``Copy.source`` and pairing key (default: the source).
    seed:
        seed of a generator for the arrivals, separate from ``sim.rng`` (see the
        module docstring); default ``None``: arrivals draw from ``sim.rng``.
    block:
        most copies per :class:`~qsense.acquisition.blocks.CopyBlock` (default
        4096); ``0`` yields one ``Copy`` per photon.
    block_time:
        simulation seconds of photons per block (default 0.05, rounded to whole
        chunks): the latency a block adds in real time, and the size of a block
        at low rates.
    """

    def __init__(
        self,
        sim: Any,
        *,
        rate: float | None = None,
        duration: float | None = None,
        count: int | None = None,
        realtime: bool = True,
        chunk_time: float = 0.01,
        source: str = "telescope",
        key: Any = None,
        seed: Any = None,
        block: int = 4096,
        block_time: float = 0.05,
    ) -> None:
        if rate is not None and not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"rate must be a positive number of copies per second; got {rate!r}")
        if duration is not None and not duration > 0:
            raise ValueError("duration must be positive")
        if not chunk_time > 0:
            raise ValueError("chunk_time must be positive")
        if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 0:
            raise ValueError(f"block must be an int >= 0 (copies per block; 0 = one Copy per photon); got {block!r}")
        if not (block_time > 0 and math.isfinite(block_time)):
            raise ValueError(f"block_time must be positive seconds; got {block_time!r}")
        self.sim = sim
        self.rate = float(rate) if rate is not None else float(sim.herald_rate)
        self.realtime = bool(realtime)
        self.duration = duration
        self.count = count
        self.chunk_time = float(chunk_time)
        self.source = source
        self.key = key
        self.wires = tuple(range(sim.M))
        self.emitted = 0
        self._stop = False
        self._rng = None if seed is None else np.random.default_rng(seed)
        self.block = int(block)
        self.block_time = float(block_time)
        #: whole chunks per block (block_time rounded, at least one)
        self.block_chunks = max(1, round(self.block_time / self.chunk_time))

    def _photons(self, duration: float) -> Any:
        """The next chunk from the simulation, drawn on the driver's own generator when
        it has one (``sim.photons`` is synchronous, so the swap cannot interleave with
        a backend call on the same event loop)."""
        if self._rng is None:
            return self.sim.photons(duration=duration)
        saved, self.sim.rng = self.sim.rng, self._rng
        try:
            return self.sim.photons(duration=duration)
        finally:
            self.sim.rng = saved

    @property
    def speed(self) -> float:
        """Simulation seconds per wall-clock second."""
        return self.rate / float(self.sim.herald_rate)

    def stop(self) -> None:
        """Finish after the copy being yielded."""
        self._stop = True

    def __aiter__(self) -> AsyncIterator[CopyBlock | Copy]:
        return self.blocks() if self.block else self.copies()  # type: ignore[return-value]

    def _chunk_step(self, sim0: float) -> float:
        """Simulation seconds of the next chunk (0: the duration is done)."""
        step = self.chunk_time
        if self.duration is not None:
            step = min(step, sim0 + self.duration - float(self.sim.now))
        return max(step, 0.0)

    async def blocks(self) -> AsyncIterator[CopyBlock]:
        """The photons as :class:`~qsense.acquisition.blocks.CopyBlock` s with their
        :class:`~qsense.sims.telescope.Photons` as ``rows`` (module docstring), paced by
        ``rate``.  The arrivals are those of :meth:`copies` for the same seed."""
        loop = asyncio.get_running_loop()
        wall0 = loop.time()
        sim0 = float(self.sim.now)
        limit = self.block if self.block >= 1 else 4096
        pending: list[Any] = []
        held = 0
        chunks = 0
        done = False
        while not done and not self._stop:
            step = self._chunk_step(sim0)
            if step <= 0:
                done = True
            else:
                ph = self._photons(step)
                if self.count is not None:
                    left = self.count - self.emitted - held
                    if len(ph) >= left:
                        ph, done = ph[:left], True
                if len(ph):
                    pending.append(ph)
                    held += len(ph)
                chunks += 1
            # a block: every `limit` copies, and what is left at the end of a span
            if held and (held >= limit or done or chunks >= self.block_chunks):
                cut = held if (done or chunks >= self.block_chunks) else held - held % limit
                for a in range(0, cut, limit):
                    ph = _take(pending, min(limit, cut - a))
                    if self.realtime:
                        due = wall0 + (float(ph.t[-1]) - sim0) / self.speed
                        delay = due - loop.time()
                        if delay > 0:
                            await asyncio.sleep(delay)
                    else:
                        await asyncio.sleep(0)  # let the consumer run
                    yield CopyBlock(self.sim, ph.t, None, self.source, self.emitted, self.wires, self.key, rows=ph)
                    self.emitted += len(ph)
                    held -= len(ph)
                    if self._stop:
                        break
            if chunks >= self.block_chunks:
                chunks = 0
            if not held:
                await asyncio.sleep(0)
        log.debug("telescope driver %r: %d copies in blocks", self.source, self.emitted)

    async def photon_batches(self) -> AsyncIterator[Any]:
        """Paced :class:`qsense.sims.telescope.Photons` chunks (the last one trimmed to
        ``count``/``duration``)."""
        loop = asyncio.get_running_loop()
        wall0 = loop.time()
        sim0 = float(self.sim.now)
        sent = 0
        while not self._stop:
            step = self._chunk_step(sim0)
            if step <= 0:
                break
            ph = self._photons(step)
            if self.count is not None and sent + len(ph) > self.count:
                ph = ph[: self.count - sent]
            if self.realtime and len(ph):
                # sleep until the last photon of the chunk is due in wall time
                due = wall0 + (float(ph.t[-1]) - sim0) / self.speed
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            else:
                await asyncio.sleep(0)
            sent += len(ph)
            yield ph
            if self.count is not None and sent >= self.count:
                break

    async def copies(self) -> AsyncIterator[Copy]:
        """One :class:`qsense.acquisition.memory.Copy` per heralded photon, paced by ``rate``."""
        loop = asyncio.get_running_loop()
        wall0 = loop.time()
        sim0 = float(self.sim.now)
        tick = 0.005  # wall seconds between pacing checks
        while not self._stop:
            step = self._chunk_step(sim0)
            if step <= 0:
                break
            ph = self._photons(step)
            t = ph.t
            i = 0
            while i < len(ph):
                if self._stop or (self.count is not None and self.emitted >= self.count):
                    return
                if self.realtime:
                    due = wall0 + (float(t[i]) - sim0) / self.speed
                    delay = due - loop.time()
                    if delay > tick:
                        await asyncio.sleep(delay)
                # emit every photon already due (up to one tick ahead) without sleeping
                horizon = (loop.time() + tick - wall0) * self.speed + sim0 if self.realtime else math.inf
                j = i + 1 if not self.realtime else max(i + 1, int(np.searchsorted(t, horizon, side="right")))
                for r in range(i, min(j, len(ph))):
                    yield Copy(
                        state=self.sim, t=float(t[r]), source=self.source, seq=self.emitted, wires=self.wires,
                        key=self.key, meta={"photons": ph, "index": r},
                    )
                    self.emitted += 1
                    if self.count is not None and self.emitted >= self.count:
                        return
                i = min(j, len(ph))
                if not self.realtime and i % 512 == 0:
                    await asyncio.sleep(0)  # let the consumer run
            if not len(ph):
                await asyncio.sleep(0)
        log.debug("telescope driver %r: %d copies", self.source, self.emitted)
