"""The expiry checks made on every arrival: ``SlotMemory.earliest_arrival`` (a lazily pruned
heap of the stores) and the scheduler's O(1) "nothing can expire" test built on it.

* ``earliest_arrival`` is the minimum arrival of the stored copies through any sequence of
  puts (arrival times out of order, several keys), takes, evictions, sweeps and full memories;
* ``sweep`` evicts exactly the copies older than ``max_wait``, released at their expiry;
* a scheduler on that memory makes, copy by copy, exactly the decisions (items, pairs,
  waits, counters) of one on the same memory without the heap (the full pass on every arrival).
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from qsense.acquisition.memory import Copy, ManualClock, SlotMemory
from qsense.acquisition.scheduler import FixedPolicy, Scheduler


class FullPass(SlotMemory):
    """The memory as it was: no ``earliest_arrival``, so the scheduler scans on every arrival."""

    def __getattribute__(self, name):
        if name == "earliest_arrival":
            raise AttributeError(name)
        return super().__getattribute__(name)

    async def sweep(self, now=None):  # the scan over every slot, as before the heap
        if self.max_wait is None or not self._slots:
            return []
        return [self._release(i.slot, i.arrival + self.max_wait, "evicted_expired", coherent=False)
                for i in self.expired(now, self.max_wait)]


@pytest.mark.parametrize("on_full", ["reject", "evict_oldest"])
def test_earliest_arrival_and_sweep_match_a_brute_force_scan(on_full):
    rng = np.random.default_rng(4)

    async def go():
        mem = SlotMemory(5, max_wait=0.3, on_full=on_full, clock=ManualClock())
        now = 0.0
        for step in range(4000):
            now += float(rng.exponential(0.02))
            op = rng.random()
            if op < 0.5:
                # arrival times out of order (several drivers): up to 0.2 s in the past
                await mem.put(Copy(None, now - float(rng.random()) * 0.2, f"k{rng.integers(3)}", step))
            elif op < 0.7 and len(mem):
                infos = mem.waiting()
                await mem.take([infos[int(rng.integers(len(infos)))].slot], at=now)
            elif op < 0.8 and len(mem):
                await mem.evict([mem.waiting()[-1].slot], "test", at=now)
            else:
                expect = sorted(i.slot for i in mem.waiting() if now - i.arrival > 0.3)
                gone = await mem.sweep(now)
                assert sorted(g.slot for g in gone) == expect
                assert all(abs(g.released - (g.copy.t + 0.3)) < 1e-12 for g in gone)
            arrivals = [i.arrival for i in mem.waiting()]
            assert mem.earliest_arrival() == (min(arrivals) if arrivals else None)
            assert len(mem._deadlines) <= 4 * mem.capacity + 65  # pruned, never unbounded

    asyncio.run(go())


@pytest.mark.parametrize("cap, max_wait", [(None, None), (2e-4, None), (None, 3e-4), (2e-4, 3e-4), (5e-4, 1e-4)])
def test_scheduler_decisions_are_those_of_the_full_pass(cap, max_wait):
    rng = np.random.default_rng(7)
    t = np.cumsum(rng.exponential(1e-4, 6000))
    keys = rng.integers(0, 3, size=t.size)

    async def go(memory_cls):
        clock = ManualClock()
        mem = memory_cls(2, max_wait=max_wait, clock=clock)
        sched = Scheduler(FixedPolicy(0.6, cap=cap), mem, clock=clock)
        out = []
        for i, (x, k) in enumerate(zip(t.tolist(), keys.tolist())):
            clock.advance_to(x)
            for it in await sched.on_arrival(Copy(None, x, "src", i, (0,), key=int(k)), x):
                out.append(tuple((sc.copy.seq, sc.wait, sc.released) for sc in it))
            if i % 97 == 0:
                for it in await sched.on_tick(x + 5e-5):
                    out.append(tuple((sc.copy.seq, sc.wait, sc.released) for sc in it))
        out += [tuple((sc.copy.seq, sc.wait) for sc in it) for it in await sched.drain(float(t[-1]) + 1.0)]
        return out, sched.counters.snapshot(), mem.counters.snapshot()

    fast, full = asyncio.run(go(SlotMemory)), asyncio.run(go(FullPass))
    assert fast[0] == full[0]
    assert fast[1] == full[1] and fast[2] == full[2]
    assert fast[1]["bell_pairs"] > 500
    if cap is not None and (max_wait is None or cap < max_wait):  # else the memory evicts first
        assert fast[1]["expired_cap"] > 0
    if max_wait is not None:
        assert fast[2]["evicted_expired"] > 0
