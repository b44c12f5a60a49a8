"""Async driver: heralded photons from a simulated telescope array, as a stream of copies.

:class:`TelescopeDriver` turns a :class:`qsense.sims.telescope.TelescopeSim` into an
async iterable of :class:`qsense.acquisition.memory.Copy` for :class:`qsense.acquisition.pipeline.Pipeline`:

* photons are generated in chunks of ``chunk_time`` seconds of *simulation* time
  (arrival times, dark counts and the atmospheric piston random walk, see
  :mod:`qsense.sims.telescope`);
* each photon becomes one ``Copy`` whose ``state`` is the simulation object
  (shared by every copy, so backends can batch them), ``t`` its arrival time on
  the simulation clock, ``wires`` the M memory qubits and ``meta`` the row
  ``{"photons": chunk, "index": i}`` that :class:`qsense.sims.telescope.TelescopeBackend`
  reads (piston phases, dark-count flag);
* ``rate`` (copies per wall-clock second) paces the stream: the driver sleeps
  so that wall time follows simulation time scaled by ``rate / sim.herald_rate``
  (``rate=None`` runs as fast as the consumer takes copies, for event-time
  simulation).  Pacing is checked once per ``tick`` of wall time, so sleeps are
  coarse and cheap.

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

from qsense.acquisition.memory import Copy

__all__ = ["TelescopeDriver"]

log = logging.getLogger(__name__)


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
    ) -> None:
        if rate is not None and not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"rate must be a positive number of copies per second; got {rate!r}")
        if duration is not None and not duration > 0:
            raise ValueError("duration must be positive")
        if not chunk_time > 0:
            raise ValueError("chunk_time must be positive")
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

    def __aiter__(self) -> AsyncIterator[Copy]:
        return self.copies()

    async def photon_batches(self) -> AsyncIterator[Any]:
        """Paced :class:`qsense.sims.telescope.Photons` chunks (the last one trimmed to
        ``count``/``duration``)."""
        loop = asyncio.get_running_loop()
        wall0 = loop.time()
        sim0 = float(self.sim.now)
        sent = 0
        while not self._stop:
            step = self.chunk_time
            if self.duration is not None:
                step = min(step, sim0 + self.duration - float(self.sim.now))
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
            step = self.chunk_time
            if self.duration is not None:
                step = min(step, sim0 + self.duration - float(self.sim.now))
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
