"""The asyncio pipeline end to end: estimates, accounting, errors, shutdown."""

from __future__ import annotations

import asyncio
import itertools

import numpy as np
import pytest

from qsense import BellEstimator, ShadowEstimator, sims
from qsense.acquisition.backends import MeasurementPlan, PennyLaneBackend, make_backend, pennylane_bell, pennylane_shadows
from qsense.acquisition.memory import Copy, ManualClock, MonotonicClock
from qsense.acquisition.pipeline import Pipeline, poisson_copies
from qsense.acquisition.scheduler import FixedPolicy, Scheduler
from qsense.acquisition.targets import Expval, PauliSquare, Purity, TargetSet
from qsense.sims.backend_sim import SimulatedBackend
from qsense.sims.memory_sim import SimulatedMemory

T2 = 2e-3


def _only_me_left():
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


def _truth(rho, n):
    pv = dict(zip(("".join(w) for w in itertools.product("IXYZ", repeat=n)), sims.pauli_vector(rho)))
    return pv


def _accounted(rep):
    c = rep.counters
    measured = c.get("records.shadow", 0) + 2 * c.get("records.bell", 0)
    return measured + c["lost"] == c["arrived"] and rep.unaccounted == 0 and c["in_flight"] == 0


@pytest.fixture
def rho3():
    psi = sims.random_circuit_state(3, 3, seed=5)
    return 0.85 * sims.to_density_matrix(psi) + 0.15 * np.eye(8) / 8


async def test_end_to_end_adaptive_estimates_and_clean_stop(rho3):
    clock = ManualClock()
    mem = SimulatedMemory(capacity=2, t2=T2, clock=clock)
    ts = TargetSet([Expval("Z0"), Expval("X1 Y2"), PauliSquare("ZZZ"), Purity()], tol=0.05, t2=T2)
    sched = Scheduler("adaptive", mem, targets=ts, replan_every=500)
    records = []

    async def sink(batch):
        records.append(batch)

    pipe = Pipeline(
        {"a": poisson_copies(rho3, 1e4, 6000, seed=1, source="a")},
        mem, sched, SimulatedBackend(seed=2), estimators=[ts], sinks=[sink], batch_size=128,
    )
    rep = await pipe.run()
    assert not _only_me_left()  # no task left running
    assert rep.errors == [] and _accounted(rep)
    c = rep.counters
    assert c["arrived"] == 6000 and c["scheduler.bell_pairs"] > 0 and c["scheduler.shadow_copies"] > 0
    assert c["records_consumed"] == c["records.shadow"] + c["records.bell"]
    # the estimates agree with the exact values
    pv = _truth(rho3, 3)
    truth = [pv["ZII"], pv["IXY"], pv["ZZZ"] ** 2, float(np.trace(rho3 @ rho3).real)]
    e = ts.estimate()
    assert np.all(np.abs(e.values - truth) < 4.5 * e.stderr), (e, truth)
    # records are numbered per source without gaps, waits are recorded
    for fam in ("shadow", "bell"):
        seqs = [b.seq for b in records if b.kind == fam]
        assert seqs == list(range(len(seqs)))
        assert all(b.source == f"pipeline.{fam}" for b in records if b.kind == fam)
    bell_waits = np.concatenate([b.wait for b in records if b.kind == "bell"])
    # a partner is the next arrival: waits are at most ~1/λ on average, and never
    # longer than the largest cap the plans used
    assert bell_waits.min() >= 0 and bell_waits.mean() < 1.2e-4
    caps = [p.cap for _, p in sched.history]
    if None not in caps:
        assert bell_waits.max() <= max(caps) + 1e-12


async def test_a_failing_driver_does_not_stop_the_others(rho3):
    async def broken():
        async for c in poisson_copies(rho3, 1e4, 50, seed=3, source="bad"):
            yield c
        raise RuntimeError("detector link lost")

    mem = SimulatedMemory(capacity=2, t2=T2, clock=ManualClock())
    est_s, est_b = ShadowEstimator(["ZII"]), BellEstimator(["ZII"])
    pipe = Pipeline(
        {"bad": broken(), "good": poisson_copies(rho3, 1e4, 500, seed=4, source="good")},
        mem, Scheduler(FixedPolicy(0.5), mem), SimulatedBackend(seed=1), estimators=[est_s, est_b],
    )
    rep = await pipe.run()
    assert not _only_me_left()
    assert rep["driver_errors"] == 1 and rep["drivers_finished"] == 1
    assert rep["arrived.bad"] == 50 and rep["arrived.good"] == 500
    assert len(rep.errors) == 1 and "detector link lost" in rep.errors[0][1]
    assert _accounted(rep)
    # estimators got only their kind of records
    assert est_s.count == rep["records.shadow"] and est_b.count == rep["records.bell"]


async def test_stop_after_duration_with_a_live_endless_driver(rho3):
    mem = SimulatedMemory(capacity=1, t2=T2, clock=MonotonicClock())
    pipe = Pipeline(
        [poisson_copies(rho3, 2000.0, 10**9, seed=1, realtime=True)],
        mem, Scheduler(FixedPolicy(0.5), mem), SimulatedBackend(seed=1), flush_interval=0.01,
    )
    rep = await asyncio.wait_for(pipe.run(duration=0.3), 10)
    assert not _only_me_left()
    assert rep["drivers_stopped"] == 1 and rep["arrived"] > 50
    assert _accounted(rep)


async def test_cancelling_run_leaves_no_task_behind(rho3):
    mem = SimulatedMemory(capacity=1, t2=T2, clock=MonotonicClock())

    class SlowBackend(SimulatedBackend):
        async def measure(self, plan):
            await asyncio.sleep(0.05)
            return await super().measure(plan)

    pipe = Pipeline(
        [poisson_copies(rho3, 5000.0, 10**9, seed=1, realtime=True)],
        mem, Scheduler(FixedPolicy(0.3), mem), SlowBackend(seed=1), batch_size=8, plan_queue=2, record_queue=2,
    )
    task = asyncio.create_task(pipe.run())
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not _only_me_left()


async def test_backpressure_bounds_queues_and_drops_are_counted(rho3):
    """A slow sink throttles everything; with on_arrival_full='drop' arrivals are
    dropped instead, and every drop is counted."""
    seen = {"max_lag": 0}
    clock = ManualClock()

    async def slow_sink(batch):
        await asyncio.sleep(0.002)

    async def flood():
        # a source that cannot pause: yields copies as fast as the loop lets it
        for i in range(3000):
            yield Copy(rho3, t=i * 1e-4, source="flood", seq=i)
            if i % 50 == 0:
                await asyncio.sleep(0)

    for mode in ("block", "drop"):
        mem = SimulatedMemory(capacity=1, t2=T2, clock=clock.__class__())
        pipe = Pipeline(
            [flood()], mem, Scheduler(FixedPolicy(0.5), mem), SimulatedBackend(seed=1), sinks=[slow_sink],
            batch_size=16, arrival_queue=32, plan_queue=2, record_queue=2, on_arrival_full=mode,
        )
        rep = await asyncio.wait_for(pipe.run(), 30)
        assert not _only_me_left() and _accounted(rep)
        if mode == "block":
            assert rep["dropped_arrival"] == 0 and rep["arrived"] == 3000
        else:
            assert rep["dropped_arrival"] > 0
            assert rep["scheduler.arrived"] + rep["dropped_arrival"] == 3000


@pytest.mark.parametrize("coalesce", [0, None, 300])
async def test_backend_and_sink_failures_are_counted(rho3, coalesce):
    # coalesce=0: per-copy plans; None: one coalesced block; 300: several blocks
    class Flaky(SimulatedBackend):
        calls = 0

        async def measure(self, plan):
            Flaky.calls += 1
            if Flaky.calls % 2 == 0:
                raise OSError("device busy")
            return await super().measure(plan)

        async def measure_block(self, plan):
            Flaky.calls += 1
            if Flaky.calls % 2 == 0:
                raise OSError("device busy")
            return await super().measure_block(plan)

    async def bad_sink(batch):
        raise ValueError("disk full")

    mem = SimulatedMemory(capacity=1, t2=T2, clock=ManualClock())
    pipe = Pipeline(
        [poisson_copies(rho3, 1e4, 2000, seed=2)], mem, Scheduler(FixedPolicy(0.4), mem), Flaky(seed=3),
        sinks=[bad_sink], batch_size=50, coalesce=coalesce,
    )
    rep = await pipe.run()
    assert rep["plans_failed"] > 0 and rep["copies_failed.shadow"] + rep["copies_failed.bell"] > 0
    assert rep["sink_errors"] == rep["record_batches"]
    assert _accounted(rep)
    assert any("device busy" in m for _, m in rep.errors) and any("disk full" in m for _, m in rep.errors)


async def test_backend_by_name_and_plan_validation(rho3):
    b = make_backend("simulated", seed=1)
    assert b.name == "simulated"
    with pytest.raises(ValueError):
        make_backend("quantum-cloud")
    with pytest.raises(ValueError):
        MeasurementPlan("bell", ((None,),))
    assert await b.measure(MeasurementPlan("shadow", ())) == []


# -- PennyLane devices ----------------------------------------------------------------------------
def _hist(codes, base):
    n = codes.shape[1]
    return np.bincount(codes.astype(np.int64) @ (base ** np.arange(n - 1, -1, -1)), minlength=base**n) / len(codes)


@pytest.mark.parametrize("device", ["default.qubit", "default.mixed"])
def test_pennylane_circuits_sample_the_right_distributions(device):
    psi = sims.random_circuit_state(2, 2, seed=9)
    state = psi if device == "default.qubit" else sims.to_density_matrix(psi)
    T = 4000
    bell = pennylane_bell(state, state, T, device=device, seed=1)
    p = sims.bell_probabilities(psi)
    assert np.max(np.abs(_hist(bell.outcomes, 4) - p) / np.sqrt(p / T + 1e-9)) < 5
    sh = pennylane_shadows(state, T, device=device, seed=2)
    q = sims.shadow_probabilities(psi)
    assert np.max(np.abs(_hist(2 * sh.bases + sh.outcomes, 6) - q) / np.sqrt(q / T + 1e-9)) < 5


async def test_pipeline_on_a_pennylane_device():
    psi = sims.random_circuit_state(2, 2, seed=4)
    rho = sims.to_density_matrix(psi)
    mem = SimulatedMemory(capacity=1, t2=T2, clock=ManualClock())
    ts = TargetSet([Expval("Z0 Z1"), Purity()], tol=0.1, t2=T2)
    pipe = Pipeline(
        [poisson_copies(rho, 1e4, 1500, seed=6)], mem, Scheduler(FixedPolicy(0.5), mem),
        PennyLaneBackend("default.mixed", seed=7), estimators=[ts], batch_size=500,
    )
    rep = await pipe.run()
    assert rep.errors == [] and _accounted(rep) and not _only_me_left()
    e = ts.estimate()
    pv = _truth(rho, 2)
    truth = [pv["ZZ"], float(np.trace(rho @ rho).real)]
    assert np.all(np.abs(e.values - truth) < 4.5 * e.stderr), (e, truth)


async def test_stop_while_drivers_wait_for_room_keeps_the_books(rho3):
    class SlowBackend(SimulatedBackend):
        async def measure(self, plan):
            await asyncio.sleep(0.01)
            return await super().measure(plan)

    mem = SimulatedMemory(capacity=1, t2=T2, clock=ManualClock())
    pipe = Pipeline(
        {f"d{i}": poisson_copies(rho3, 1e4, 10**6, seed=i, source=f"d{i}") for i in range(3)},
        mem, Scheduler(FixedPolicy(0.5), mem), SlowBackend(seed=1),
        batch_size=8, arrival_queue=4, plan_queue=1, record_queue=1,
    )
    task = asyncio.create_task(pipe.run())
    await asyncio.sleep(0.2)
    pipe.stop()
    rep = await asyncio.wait_for(task, 10)
    assert not _only_me_left()
    assert rep["drivers_stopped"] == 3 and rep["arrived"] > 0
    assert _accounted(rep), rep.counters
