"""The block path: copies in CopyBlocks through scheduler, memory, backend and
pipeline.  Decisions identical to the per-copy path, exact accounting,
statistically equal estimates, memory limits, clean shutdown."""

from __future__ import annotations

import asyncio
import itertools

import numpy as np
import pytest

from qsense import BellEstimator, sims
from qsense.acquisition.backends import BlockPlan
from qsense.acquisition.blocks import (
    CLOSE,
    EVICT_CAP,
    EVICT_MEMORY,
    NO_SLOT,
    OPEN,
    SHADOW,
    WAITING,
    CopyBlock,
    schedule_segment,
)
from qsense.acquisition.memory import Copy, ManualClock, MonotonicClock
from qsense.acquisition.pipeline import Pipeline, poisson_blocks, poisson_copies
from qsense.acquisition.scheduler import FixedPolicy, Scheduler
from qsense.acquisition.targets import Expval, PauliSquare, Purity, TargetSet
from qsense.sims.backend_sim import SimulatedBackend
from qsense.sims.memory_sim import SimulatedMemory

T2 = 2e-3


def _only_me_left():
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


def _accounted(rep):
    c = rep.counters
    measured = c.get("records.shadow", 0) + 2 * c.get("records.bell", 0)
    return measured + c["lost"] == c["arrived"] and rep.unaccounted == 0 and c["in_flight"] == 0


def _nonzero(counters):
    return {k: int(v) for k, v in counters.items() if v and k not in ("replans", "blocks", "arrived_in_blocks")}


@pytest.fixture
def rho3():
    psi = sims.random_circuit_state(3, 3, seed=5)
    return 0.85 * sims.to_density_matrix(psi) + 0.15 * np.eye(8) / 8


async def _run_scheduler(rho, times, *, mode, ratio, cap, max_wait, capacity=1, block=700, other=False):
    """Feed the same arrivals copy by copy or in blocks; return counters and Bell waits."""
    mem = SimulatedMemory(capacity=capacity, t2=T2, clock=ManualClock(), max_wait=max_wait)
    if other:  # another key holds a slot for the whole run (its source never sends again)
        await mem.put(Copy(rho, t=-1.0, source="other"))
    s = Scheduler(FixedPolicy(ratio, cap=cap), mem, replan_every=97)
    waits, shadows = [], 0
    if mode == "copy":
        results = [await s.on_arrival(c, c.t) for c in CopyBlock(rho, times, source="a").copies()]
        items = [it for r in results for it in r]
    else:
        items = []
        for a in range(0, len(times), block):
            r = await s.on_block(CopyBlock(rho, times[a : a + block], source="a", seq=a))
            assert r.roles is not None
            items += r.items
            for p in r.plans:
                if p.family == "bell":
                    waits += p.bell_wait.tolist()
                else:
                    shadows += len(p)
    for it in items:
        if len(it) == 2:
            waits.append(it[0].wait + it[1].wait)
        else:
            shadows += 1
    return _nonzero(s.counters), _nonzero(mem.counters), np.sort(waits), shadows, len(mem)


@pytest.mark.parametrize(
    "ratio,cap,max_wait,capacity,other",
    [
        (0.3, None, None, 1, False),
        (0.3, 1e-4, None, 2, False),
        (0.6, 5e-5, 8e-5, 1, False),  # both the plan's cap and the memory's max_wait evict
        (1.0, 1e-4, None, 1, False),
        (0.5, None, None, 1, True),  # the only slot is taken by another key: every opener is refused
        (0.5, 2e-4, None, 2, True),
    ],
)
async def test_block_decisions_are_those_of_the_per_copy_rule(rho3, ratio, cap, max_wait, capacity, other):
    times = np.cumsum(np.random.default_rng(3).exponential(1e-4, 5000))
    a = await _run_scheduler(rho3, times, mode="copy", ratio=ratio, cap=cap, max_wait=max_wait, capacity=capacity, other=other)
    b = await _run_scheduler(rho3, times, mode="block", ratio=ratio, cap=cap, max_wait=max_wait, capacity=capacity, other=other)
    assert a[0] == b[0]  # scheduler counters
    if other and cap is not None:
        # the other key's copy expires during the first block; the block path
        # counts its slot as held through that block
        assert b[1].pop("peak_occupancy") <= capacity
        a[1].pop("peak_occupancy")
    assert a[1] == b[1]  # memory counters: stored, taken, evicted_*, rejected, peak_occupancy
    np.testing.assert_allclose(a[2], b[2], rtol=0, atol=1e-15)  # the same Bell waits
    assert a[3:] == b[3:]  # shadows measured, copies left in memory
    if other:
        assert b[0].get("no_slot", 0) > 0 or capacity > 1


def test_segment_kernel_roles_by_hand():
    """Arrivals at 0, 1, 1.5, 5, 5.2, 9 with f = 1, cap = 1: open, close, open,
    (evicted at 2.5: the 4th arrival finds no partner and opens), close, open."""
    t = np.array([0.0, 1.0, 1.5, 5.0, 5.2, 9.0])
    roles = np.full(t.size, -1, np.int8)
    credit, has_open, open_t, idx = schedule_segment(t, 0, t.size, 1.0, np.inf, 1.0, np.inf, np.inf, True, 0.0, False, 0.0, -1, roles)
    assert roles.tolist() == [OPEN, CLOSE, EVICT_CAP, OPEN, CLOSE, WAITING]
    assert has_open and open_t == 9.0 and idx == 5
    # without a slot every would-be opener is a shadow
    roles[:] = -1
    schedule_segment(t, 0, t.size, 1.0, np.inf, 1.0, np.inf, np.inf, False, 0.0, False, 0.0, -1, roles)
    assert set(roles.tolist()) == {NO_SLOT}
    roles[:] = -1
    schedule_segment(t, 0, t.size, 0.0, np.inf, 1.0, np.inf, 0.5, True, 0.0, False, 0.0, -1, roles)
    assert set(roles.tolist()) == {SHADOW}
    # memory max_wait below the cap: the opener is evicted by the memory
    roles[:] = -1
    schedule_segment(t, 0, 3, 1.0, np.inf, 10.0, np.inf, 0.7, True, 0.0, False, 0.0, -1, roles)
    assert roles[:3].tolist() == [EVICT_MEMORY, OPEN, CLOSE]


async def test_block_pipeline_accounting_waits_and_clean_stop(rho3):
    clock = ManualClock()
    mem = SimulatedMemory(capacity=2, t2=T2, clock=clock)
    ts = TargetSet([Expval("Z0"), PauliSquare("ZZZ"), Purity()], tol=0.05, t2=T2)
    sched = Scheduler("adaptive", mem, targets=ts, replan_every=500)
    records = []

    async def sink(batch):
        records.append(batch)

    pipe = Pipeline(
        {"a": poisson_blocks(rho3, 1e4, 50_000, block=3000, seed=1, source="a")},
        mem, sched, SimulatedBackend(seed=2), estimators=[ts], sinks=[sink],
    )
    rep = await pipe.run()
    assert not _only_me_left()
    assert rep.errors == [] and _accounted(rep), rep.counters
    c = rep.counters
    assert c["arrived"] == 50_000 and c["scheduler.arrived"] == 50_000 and c["scheduler.blocks"] == 17
    assert c["scheduler.bell_pairs"] > 0 and c["block_plans"] > 0 and c.get("scheduler.block_fallback", 0) == 0
    assert c["records_consumed"] == c["records.shadow"] + c["records.bell"]
    assert c["memory.peak_occupancy"] <= 2
    for fam in ("shadow", "bell"):
        seqs = [b.seq for b in records if b.kind == fam]
        assert seqs == list(range(len(seqs)))
    # Bell waits: the gap to the next arrival, never longer than the largest cap used
    w = np.concatenate([b.wait for b in records if b.kind == "bell"])
    assert w.min() > 0 and 0.5e-4 < w.mean() < 1.2e-4
    caps = [p.cap for _, p in sched.history]
    if None not in caps:
        assert w.max() <= max(caps) + 1e-12
    # the same arrival times as the per-copy driver for the same seed
    t_copy = np.array([cp.t async for cp in poisson_copies(rho3, 1e4, 5000, seed=1)])
    t_block = np.concatenate([b.t async for b in poisson_blocks(rho3, 1e4, 5000, block=777, seed=1)])
    np.testing.assert_allclose(t_copy, t_block, rtol=1e-12)


async def test_block_and_per_copy_estimates_agree(rho3):
    """Same targets, finite T2 (Bell reweighted by BellEstimator(t2=...)): the block
    path's estimates agree with the per-copy path's and with the exact values."""
    pv = dict(zip(("".join(w) for w in itertools.product("IXYZ", repeat=3)), sims.pauli_vector(rho3)))
    truth = np.array([pv["ZII"], pv["IXY"], pv["ZZZ"] ** 2, pv["XXX"] ** 2, float(np.trace(rho3 @ rho3).real)])
    est = {}
    for mode, count in (("copy", 8000), ("block", 8000)):
        mem = SimulatedMemory(capacity=1, t2=T2, clock=ManualClock())
        ts = TargetSet([Expval("Z0"), Expval("X1 Y2"), PauliSquare("ZZZ"), PauliSquare("XXX"), Purity()], tol=0.05, t2=T2)
        bell = BellEstimator(["ZZZ", "XXX"], t2=T2)
        drv = poisson_copies(rho3, 1e4, count, seed=7, block=None if mode == "copy" else 2048)
        pipe = Pipeline([drv], mem, Scheduler(FixedPolicy(0.5, cap=3e-4), mem), SimulatedBackend(seed=8), estimators=[ts, bell])
        rep = await pipe.run()
        assert rep.errors == [] and _accounted(rep)
        e = ts.estimate()
        assert np.all(np.abs(e.values - truth) < 4.5 * e.stderr), (mode, e, truth)
        b = bell.estimate()
        assert np.all(np.abs(b.values - truth[2:4]) < 4.5 * b.stderr), (mode, b, truth)
        est[mode] = e
    d = np.abs(est["copy"].values - est["block"].values)
    assert np.all(d < 4.5 * np.hypot(est["copy"].stderr, est["block"].stderr)), est


async def test_memory_limits_and_fallbacks_in_the_block_path(rho3):
    # a dephasing memory has no survival probability: the backend samples each
    # decohered state on its own (per-copy fallback inside measure_block)
    clock = ManualClock()
    mem = SimulatedMemory(capacity=1, t2=T2, model="dephasing", clock=clock, max_wait=1.5e-4)
    pipe = Pipeline(
        [poisson_blocks(rho3, 1e4, 3000, block=1000, seed=2)], mem, Scheduler(FixedPolicy(0.6, cap=2e-4), mem),
        SimulatedBackend(seed=1),
    )
    rep = await pipe.run()
    assert rep.errors == [] and _accounted(rep)
    assert rep["memory.evicted_expired"] > 0 and rep["memory.peak_occupancy"] == 1
    assert rep["memory.stored"] == rep["scheduler.opened"]
    # a backend without measure_block gets the equivalent per-copy plans
    class PerCopyOnly:
        name = "per-copy"

        def __init__(self):
            self.inner = SimulatedBackend(seed=3)

        async def measure(self, plan):
            return await self.inner.measure(plan)

    mem = SimulatedMemory(capacity=1, t2=T2, clock=ManualClock())
    ts = TargetSet([Expval("Z0"), PauliSquare("ZZZ")], tol=0.05, t2=T2)
    pipe = Pipeline([poisson_blocks(rho3, 1e4, 2000, block=500, seed=2)], mem, Scheduler(FixedPolicy(0.5), mem), PerCopyOnly(), estimators=[ts])
    rep = await pipe.run()
    assert rep.errors == [] and _accounted(rep) and rep["records.bell"] > 0
    # a memory full with another key's copy and on_full='evict_oldest': copy by copy
    mem = SimulatedMemory(capacity=1, t2=T2, clock=ManualClock(), on_full="evict_oldest")
    await mem.put(Copy(rho3, t=0.0, source="other"))
    s = Scheduler(FixedPolicy(0.5), mem)
    r = await s.on_block(CopyBlock(rho3, np.arange(1, 11) * 1e-4, source="a"))
    assert r.roles is None and s.counters["block_fallback"] == 1 and mem.counters["evicted_full"] == 1
    assert s.counters["shadow_copies"] + s.counters["bell_copies"] + len(mem) == 10
    # block plans validate their layout
    with pytest.raises(ValueError):
        BlockPlan("bell", (rho3,), np.zeros(2), np.zeros((2, 2)), np.zeros((2, 2), int))


async def test_block_drivers_stop_cancel_and_drop(rho3):
    # live blocks (stamped on arrival) stopped after a duration
    mem = SimulatedMemory(capacity=1, t2=T2, clock=MonotonicClock())
    pipe = Pipeline(
        [poisson_blocks(rho3, 2e4, 10**9, block=200, seed=1, realtime=True)],
        mem, Scheduler(FixedPolicy(0.5), mem), SimulatedBackend(seed=1), flush_interval=0.01,
    )
    rep = await asyncio.wait_for(pipe.run(duration=0.3), 10)
    assert not _only_me_left() and rep["drivers_stopped"] == 1 and rep["arrived"] >= 200
    assert _accounted(rep), rep.counters

    # cancelling run() leaves no task behind
    class SlowBackend(SimulatedBackend):
        async def measure_block(self, plan):
            await asyncio.sleep(0.05)
            return await super().measure_block(plan)

    mem = SimulatedMemory(capacity=1, t2=T2, clock=ManualClock())
    pipe = Pipeline(
        [poisson_blocks(rho3, 1e4, 10**9, block=256, seed=1)], mem, Scheduler(FixedPolicy(0.3), mem), SlowBackend(seed=1),
        plan_queue=2, record_queue=2,
    )
    task = asyncio.create_task(pipe.run())
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not _only_me_left()

    # a source that cannot pause: whole blocks are dropped and counted; a
    # per-copy driver beside it (another key) shares the memory
    async def flood():
        for i in range(60):
            yield CopyBlock(rho3, (i * 100 + np.arange(100)) * 1e-5, source="flood", seq=i * 100)
            await asyncio.sleep(0)

    mem = SimulatedMemory(capacity=2, t2=T2, clock=ManualClock())
    pipe = Pipeline(
        {"flood": flood(), "single": poisson_copies(rho3, 1e4, 300, seed=5, source="single")},
        mem, Scheduler(FixedPolicy(0.5), mem), SlowBackend(seed=1),
        arrival_queue=2, plan_queue=1, record_queue=1, on_arrival_full="drop",
    )
    rep = await asyncio.wait_for(pipe.run(), 30)
    assert not _only_me_left() and _accounted(rep), rep.counters
    assert rep["dropped_arrival"] > 0
    assert rep["scheduler.arrived"] + rep["dropped_arrival"] == 6300


def test_plain_python_scan_equals_the_compiled_one():
    """The fallback used without numba (or with QSENSE_NO_JIT) makes the same decisions."""
    import math

    from qsense.acquisition.blocks import schedule_segment, segment_kernel

    kernel = segment_kernel()
    assert kernel is not schedule_segment  # numba is a dependency: the compiled scan is in use
    rng = np.random.default_rng(11)
    for trial in range(30):
        N = int(rng.integers(1, 400))
        t = np.cumsum(rng.exponential(1e-4, N))
        f = float(rng.choice([0.0, 0.2, 0.5, 1.0]))
        cap = float(rng.choice([math.inf, 1e-4, 3e-4]))
        max_wait = float(rng.choice([math.inf, 2e-4]))
        args = (t, 0, N, f, math.inf, cap, math.inf, max_wait, bool(rng.integers(0, 2)), 0.0, False, 0.0, -1)
        r1, r2 = np.zeros(N, np.int8), np.zeros(N, np.int8)
        out1 = schedule_segment(*args, r1)
        out2 = kernel(*args, r2)
        np.testing.assert_array_equal(r1, r2)
        assert out1[0] == pytest.approx(out2[0]) and out1[1:] == tuple(out2[1:])
