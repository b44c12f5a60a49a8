"""The telescope chain's block path: ``TelescopeDriver`` blocks → ``Scheduler.on_block`` →
``TelescopeBackend.measure_block``, against the per-copy path on the same seeded source.

* the driver's blocks carry exactly the per-copy driver's photons (``CopyBlock.rows``);
* with a fixed plan both paths make the same decisions (counters, which copies are
  shadows, which are paired and how long they waited) and give records of the same layout;
  the outcomes agree statistically (the sampler draws in other chunk sizes), and both
  estimate the simulated sky's exact visibilities within their errors;
* a block plan measured by ``measure_block`` and the same plan as per-copy items
  (``BlockPlan.to_plan()``) give the same records bit for bit;
* odd input: empty and one-copy blocks, rows that do not match, plans without photons,
  a full memory mid-block, copies expiring inside a block, every memory model.
"""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from qsense.acquisition.backends import BlockPlan
from qsense.acquisition.blocks import CopyBlock
from qsense.acquisition.memory import Copy, ManualClock, SlotMemory
from qsense.acquisition.pipeline import Pipeline
from qsense.acquisition.scheduler import FixedPolicy, Scheduler
from qsense.drivers.telescope import TelescopeDriver
from qsense.estimators.interferometry import SquaredVisibilityEstimator, VisibilityEstimator
from qsense.sims.memory_sim import SimulatedMemory
from qsense.sims.telescope import (
    MAS,
    BinaryStar,
    Photons,
    TelescopeArray,
    TelescopeBackend,
    TelescopeCoherence,
    TelescopeSim,
    demo_array,
)

LAM = 800e-9


def make_sim(M: int = 5, seed: int = 5, **kw) -> TelescopeSim:
    kw = {"epsilon": 1e-5, "t2": 0.01, **kw}
    return TelescopeSim(TelescopeArray(demo_array(M), LAM), BinaryStar(3 * MAS, 1.0, 0.5), seed=seed, **kw)


class Only:
    """An estimator that takes one record kind."""

    def __init__(self, est, kind):
        self.est, self.kind = est, kind

    def accepts(self, kind):
        return kind == self.kind

    def update(self, batch):
        self.est.update(batch)


class PerCopyOnly:
    """The telescope backend without ``measure_block``: the pipeline hands it ``BlockPlan.to_plan()``."""

    name = "telescope-per-copy"

    def __init__(self, sim):
        self.inner = TelescopeBackend(sim)

    async def measure(self, plan):
        return await self.inner.measure(plan)


class NoBulkMemory(SlotMemory):
    """A memory without bulk accounting (as a hardware memory): blocks go copy by copy."""

    def __getattribute__(self, name):
        if name == "account_block":
            raise AttributeError(name)
        return super().__getattribute__(name)


def run_chain(sim, *, block, count, memory=None, policy=None, backend=None, estimators=(), pipe_kw=None, seed=(5, 1)):
    clock = ManualClock()
    mem = memory(clock) if memory is not None else SlotMemory(2, TelescopeCoherence(sim.t2), clock=clock)
    sched = Scheduler(policy or FixedPolicy(0.5), mem, clock=clock)
    records = []

    async def sink(b):
        records.append(b)

    # partial plans flushed on event time: plan boundaries, and so the order of the draws on
    # sim.rng, are a function of the copies alone
    opts = {"flush_clock": "event", "flush_interval": 2e-3, **(pipe_kw or {})}
    if not block:
        opts.setdefault("coalesce", 0)
    drv = TelescopeDriver(sim, count=count, realtime=False, seed=list(seed), block=block)
    pipe = Pipeline({"tel": drv}, mem, sched, backend or TelescopeBackend(sim), estimators=list(estimators), sinks=[sink],
                    clock=clock, batch_size=256, **opts)
    rep = asyncio.run(pipe.run())
    assert not rep.errors, rep.errors
    assert rep.unaccounted == 0
    return rep, records, mem


def rows_of(records, kind):
    bs = [b for b in records if b.kind == kind]
    t = np.concatenate([b.t for b in bs])
    o = np.concatenate([b.outcomes for b in bs])
    w = np.concatenate([b.wait for b in bs]) if kind == "bell" else None
    order = np.argsort(t, kind="stable")
    return t[order], o[order], None if w is None else w[order], bs


DECISIONS = ("arrived", "shadow_copies", "bell_pairs", "bell_copies", "opened", "closed", "expired_cap", "expired_memory")


# ----------------------------------------------------------------------------- the driver
async def test_driver_blocks_carry_the_per_copy_photons():
    per = [c async for c in TelescopeDriver(make_sim(), count=2500, realtime=False, seed=[9, 1], block=0)]
    blocks = [b async for b in TelescopeDriver(make_sim(), count=2500, realtime=False, seed=[9, 1], block=300)]
    assert all(isinstance(b, CopyBlock) for b in blocks) and sum(len(b) for b in blocks) == 2500
    assert max(len(b) for b in blocks) == 300
    t = np.concatenate([b.t for b in blocks])
    assert np.array_equal(t, [c.t for c in per])  # the same arrivals for the same seed
    seq = 0
    for b in blocks:
        assert b.seq == seq and isinstance(b.rows, Photons) and len(b.rows) == len(b)
        assert np.array_equal(b.rows.t, b.t) and b.rows.piston.shape == (len(b), 5) and b.wires == (0, 1, 2, 3, 4)
        seq += len(b)
    # a copy taken out of a block names its photon row (the per-copy fallback)
    c = blocks[1].copy(7)
    assert c.seq == blocks[1].seq + 7 and c.meta["rows"] is blocks[1].rows and c.meta["index"] == 7
    # by default a block is block_time = 0.05 s of photons (10^4/s: ~500)
    sizes = [len(b) async for b in TelescopeDriver(make_sim(), duration=0.3, realtime=False)]
    assert len(sizes) == 6 and all(350 < n < 650 for n in sizes)


def test_driver_rejects_bad_block_options():
    sim = make_sim()
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="block must be an int"):
            TelescopeDriver(sim, block=bad)
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="block_time"):
            TelescopeDriver(sim, block_time=bad)


# ----------------------------------------------------------------------------- block vs per copy
def test_block_and_per_copy_paths_decide_alike_and_both_find_the_sky():
    M, count = 5, 12_000
    out = {}
    for block in (0, 4096):
        sim = make_sim(M, t2=1.0)
        vis, vis2 = VisibilityEstimator(M), SquaredVisibilityEstimator(M)
        rep, records, _ = run_chain(sim, block=block, count=count, estimators=[Only(vis, "shadow"), Only(vis2, "bell")])
        out[block] = (rep, records, vis.estimate(), vis2.estimate(), sim.true_visibilities())
    (r0, rec0, e0, q0, truth), (r1, rec1, e1, q1, _) = out[0], out[4096]
    assert r1["scheduler.blocks"] > 10 and r0["scheduler.blocks"] == 0 and r1["coalesced_blocks"] == 0
    for k in DECISIONS:
        assert r0[f"scheduler.{k}"] == r1[f"scheduler.{k}"], k
    for k in ("stored", "taken", "peak_occupancy"):
        assert r0[f"memory.{k}"] == r1[f"memory.{k}"], k
    assert r1["records.shadow"] + 2 * r1["records.bell"] == count
    # the same copies measured the same way: release times and waits row for row
    for kind in ("shadow", "bell"):
        t0, o0, w0, b0 = rows_of(rec0, kind)
        t1, o1, w1, b1 = rows_of(rec1, kind)
        assert np.array_equal(t0, t1) and o0.shape == o1.shape == (len(t0), M)
        assert all(b.wires == tuple(range(M)) and b.outcomes.dtype == np.uint8 for b in b0 + b1)
        if kind == "bell":
            assert np.array_equal(w0, w1) and np.all(w1 > 0)
            # Bell codes: the same distribution per wire (chi-square on 4 x M counts)
            from scipy.stats import chi2_contingency

            for q in range(M):
                tab = np.array([np.bincount(o0[:, q], minlength=4), np.bincount(o1[:, q], minlength=4)])
                assert chi2_contingency(tab[:, tab.sum(axis=0) > 0]).pvalue > 1e-4, q
    # both estimate the exact visibilities of the simulated sky within their errors
    for e, q in ((e0, q0), (e1, q1)):
        pull = np.abs(e.values - truth) / np.hypot(e.stderr_re, e.stderr_im)
        assert np.mean(pull) < 2.0 and np.max(pull) < 5.0
        pull2 = np.abs(q.values - np.abs(truth) ** 2) / q.stderr
        assert np.mean(pull2) < 2.0 and np.max(pull2) < 5.0
    # and agree with each other (independent draws): differences within the combined errors
    d = np.abs(e0.values - e1.values) / np.hypot(np.hypot(e0.stderr_re, e0.stderr_im), np.hypot(e1.stderr_re, e1.stderr_im))
    assert np.mean(d) < 2.0


@pytest.mark.parametrize("M", [5, 64])
def test_block_plan_measured_per_copy_is_bit_identical(M):
    # measure_block and the per-copy measure of BlockPlan.to_plan() draw the same numbers
    recs = {}
    for backend in ("block", "per-copy"):
        sim = make_sim(M, seed=11, dark_prob=2e-7, piston_diffusion=50.0)
        be = TelescopeBackend(sim) if backend == "block" else PerCopyOnly(sim)
        rep, records, _ = run_chain(sim, block=1024, count=3000 if M == 5 else 1500, backend=be)
        assert rep["block_plans"] > 2
        recs[backend] = records
    a, b = recs["block"], recs["per-copy"]
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.kind == y.kind and x.wires == y.wires == tuple(range(M))
        assert np.array_equal(x.t, y.t) and np.array_equal(x.outcomes, y.outcomes)
        if x.kind == "shadow":
            assert np.array_equal(x.bases, y.bases)
        else:
            assert np.array_equal(x.wait, y.wait)


def test_seeded_paced_block_runs_reproduce():
    async def once(jitter: bool):
        sim = make_sim(4, seed=5)
        clock = ManualClock()
        mem = SlotMemory(2, TelescopeCoherence(sim.t2), clock=clock)
        records = []

        async def sink(batch):
            records.append(batch)
            if jitter:
                await asyncio.sleep(0.003)

        drv = TelescopeDriver(sim, rate=40_000.0, count=3000, seed=[5, 1], block_time=0.02)
        pipe = Pipeline({"tel": drv}, mem, Scheduler("fixed", mem, ratio=0.5, clock=clock), TelescopeBackend(sim),
                        sinks=[sink], clock=clock, batch_size=128, flush_interval=2e-3, flush_clock="event")
        rep = await pipe.run()
        assert not rep.errors and rep["scheduler.blocks"] >= 10
        return records

    a, b = asyncio.run(once(False)), asyncio.run(once(True))
    assert len(a) == len(b) > 4
    for x, y in zip(a, b):
        assert x.kind == y.kind and x.seq == y.seq and np.array_equal(x.outcomes, y.outcomes) and np.array_equal(x.t, y.t)


# ----------------------------------------------------------------------------- odd input
async def test_empty_and_one_copy_blocks_and_bad_rows():
    sim = make_sim(4)
    ph = sim.photons(count=3)
    with pytest.raises(ValueError, match="rows has 3 entries for a block of 2"):
        CopyBlock(sim, ph.t[:2], rows=ph)
    for bad in ([1, 2, 3], 3.0, {"a": 1}):
        with pytest.raises(ValueError, match="rows must have a length and take integer-array indexing"):
            CopyBlock(sim, ph.t, rows=bad)
    assert len(CopyBlock(sim, ph.t, rows=np.arange(3)).copy(2).meta["rows"]) == 3  # a plain array is fine
    clock = ManualClock()
    mem = SlotMemory(2, TelescopeCoherence(sim.t2), clock=clock)
    sched = Scheduler(FixedPolicy(0.5), mem, clock=clock)
    empty = CopyBlock(sim, ph.t[:0], source="tel", wires=(0, 1, 2, 3), rows=ph[:0])
    res = await sched.on_block(empty)
    assert res.items == [] and res.plans == [] and len(res.roles) == 0
    be = TelescopeBackend(sim)
    z = BlockPlan("shadow", (sim,), np.zeros(0), np.zeros((0, 1)), np.zeros((0, 1), np.int64), rows=(ph[:0],))
    assert await be.measure_block(z) == []

    async def drive():
        for i in range(3):  # three one-copy blocks: open, close across the boundary, shadow or open
            yield CopyBlock(sim, ph.t[i : i + 1], None, "tel", i, (0, 1, 2, 3), rows=ph[i : i + 1])

    clock = ManualClock()
    mem = SlotMemory(2, TelescopeCoherence(sim.t2), clock=clock)
    pipe = Pipeline({"tel": drive()}, mem, Scheduler("bell", mem, clock=clock), be, clock=clock)
    rep = await pipe.run()
    assert not rep.errors and rep.unaccounted == 0 and rep["scheduler.blocks"] == 3
    assert rep["records.bell"] == 1 and rep["memory.evicted_drain"] == 1  # the third opener never found a partner
    # plans without telescope photons, or from another simulation, are refused by name
    plan = BlockPlan("shadow", (sim,), ph.t, np.zeros((3, 1)), np.arange(3)[:, None])
    with pytest.raises(ValueError, match="carries no telescope photons"):
        await be.measure_block(plan)
    with pytest.raises(ValueError, match="rows must hold 1 per-copy payloads of 3 rows"):
        BlockPlan("shadow", (sim,), ph.t, np.zeros((3, 1)), np.arange(3)[:, None], rows=(ph[:2],))
    other = BlockPlan("shadow", (make_sim(4),), ph.t, np.zeros((3, 1)), np.arange(3)[:, None], rows=(ph,))
    with pytest.raises(ValueError, match="not from this telescope simulation"):
        await be.measure_block(other)
    with pytest.raises(ValueError, match="carries no telescope photon"):
        await be.measure(BlockPlan("shadow", (sim,), ph.t, np.zeros((3, 1)), np.arange(3)[:, None]).to_plan())
    arr = BlockPlan("shadow", (sim,), ph.t, np.zeros((3, 1)), np.arange(3)[:, None], rows=(np.zeros(3),))
    with pytest.raises(ValueError, match="its photon rows are a ndarray, not Photons"):
        await be.measure(arr.to_plan())
    with pytest.raises(ValueError, match="carries no telescope photons"):
        await be.measure_block(arr)


def test_memory_full_mid_block_and_copies_expiring_inside_a_block():
    sim = make_sim(4)
    ph = sim.photons(count=400)

    async def full():
        clock = ManualClock()
        mem = SlotMemory(1, TelescopeCoherence(sim.t2), clock=clock)
        sched = Scheduler(FixedPolicy(0.5), mem, clock=clock)
        # another key's copy holds the only slot: every would-be opener of the block is a shadow (no_slot)
        await mem.put(Copy(sim, float(ph.t[0]) - 1e-6, "other", 0, (0, 1, 2, 3), meta={"rows": ph, "index": 0}))
        res = await sched.on_block(CopyBlock(sim, ph.t, None, "tel", 0, (0, 1, 2, 3), rows=ph))
        assert sched.counters["no_slot"] > 100 and sched.counters["bell_pairs"] == 0
        (shadow,) = res.plans
        assert shadow.family == "shadow" and len(shadow) == 400 and np.array_equal(shadow.rows[0].t, ph.t)
        (b,) = await TelescopeBackend(sim).measure_block(shadow)
        assert b.T == 400 and np.array_equal(b.t, ph.t)

    asyncio.run(full())
    # copies expiring inside a block: a wait cap shorter than most gaps (10^4/s: mean gap 1e-4 s),
    # and a memory max_wait shorter still
    for cap, max_wait, counter in ((3e-5, None, "expired_cap"), (None, 2e-5, "expired_memory")):
        sim = make_sim(4, seed=8)
        rep, records, _ = run_chain(
            sim, block=4096, count=4000, policy=FixedPolicy(0.5, cap=cap),
            memory=lambda clk, w=max_wait: SlotMemory(2, TelescopeCoherence(0.01), clock=clk, max_wait=w),
        )
        assert rep[f"scheduler.{counter}"] > 500
        assert rep["records.shadow"] + 2 * rep["records.bell"] + rep["lost"] == 4000
        waits = np.concatenate([b.wait for b in records if b.kind == "bell"])
        assert waits.max() <= (cap or max_wait)
        # the per-copy path evicts the same copies
        rep0, _, _ = run_chain(
            make_sim(4, seed=8), block=0, count=4000, policy=FixedPolicy(0.5, cap=cap),
            memory=lambda clk, w=max_wait: SlotMemory(2, TelescopeCoherence(0.01), clock=clk, max_wait=w),
        )
        for k in DECISIONS:
            assert rep0[f"scheduler.{k}"] == rep[f"scheduler.{k}"], (counter, k)


MEMORIES = {
    "slots reject": lambda clk: SlotMemory(2, TelescopeCoherence(0.01), clock=clk),
    "slots evict_oldest": lambda clk: SlotMemory(2, TelescopeCoherence(0.01), clock=clk, on_full="evict_oldest"),
    "slots block": lambda clk: SlotMemory(2, TelescopeCoherence(0.01), clock=clk, on_full="block"),
    "slots one, max_wait": lambda clk: SlotMemory(1, TelescopeCoherence(0.01), clock=clk, max_wait=5e-4),
    "no slots": lambda clk: SlotMemory(0, TelescopeCoherence(0.01), clock=clk),
    "simulated": lambda clk: SimulatedMemory(capacity=2, t2=0.01, clock=clk),
    "no bulk accounting": lambda clk: NoBulkMemory(2, TelescopeCoherence(0.01), clock=clk),
}


@pytest.mark.parametrize("name", list(MEMORIES))
def test_every_memory_model_takes_telescope_blocks(name):
    count = 3000
    rep, records, _ = run_chain(make_sim(4, seed=3), block=700, count=count, memory=MEMORIES[name])
    rep0, records0, _ = run_chain(make_sim(4, seed=3), block=0, count=count, memory=MEMORIES[name])
    assert rep["records.shadow"] + 2 * rep["records.bell"] + rep["lost"] == count
    for k in DECISIONS:
        assert rep[f"scheduler.{k}"] == rep0[f"scheduler.{k}"], k
    if name == "no bulk accounting":
        assert rep["scheduler.block_fallback"] == rep["scheduler.blocks"] + rep["scheduler.block_fallback"] > 0
    else:
        assert rep["scheduler.blocks"] >= count // 700 and rep["scheduler.block_fallback"] == 0
    if name == "no slots":
        assert rep["records.bell"] == 0 and rep["records.shadow"] == count
    else:
        assert rep["records.bell"] > 100
    t, _, _, _ = rows_of(records, "shadow")
    t0, _, _, _ = rows_of(records0, "shadow")
    assert np.array_equal(t, t0)
