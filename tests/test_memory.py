"""Quantum memory: decoherence by the actual wait, capacity and eviction, counters."""

from __future__ import annotations

import asyncio
import itertools
import math

import numpy as np
import pytest

from qsense import BellEstimator, sims
from qsense.acquisition.backends import MeasurementPlan, depolarize_bell_codes, depolarize_shadow_bits
from qsense.acquisition.memory import Copy, IdealCoherence, ManualClock, QuantumMemory, SlotMemory, StoredCopy
from qsense.sims.backend_sim import SimulatedBackend
from qsense.sims.memory_sim import SimsCoherence, SimulatedMemory

T2 = 2e-3


def _weights(n: int, count: str = "IXYZ") -> np.ndarray:
    """Per index of sims.pauli_vector: the number of letters counted for decay."""
    out = []
    for word in itertools.product("IXYZ", repeat=n):
        out.append(sum(c in count and c != "I" for c in word))
    return np.array(out)


@pytest.fixture
def rho3():
    psi = sims.random_circuit_state(3, 3, seed=11)
    return sims.to_density_matrix(psi)


async def test_decoherence_matches_each_copys_wait(rho3):
    clock = ManualClock()
    mem = SimulatedMemory(capacity=3, t2=T2, clock=clock)
    pv = sims.pauli_vector(rho3)
    k = _weights(3)
    arrivals = [0.0, 0.4e-3, 1.5e-3]
    slots = []
    for t in arrivals:
        clock.advance_to(t)
        slots.append(await mem.put(Copy(rho3, source="s")))  # stamped by the clock
    clock.advance_to(2.5e-3)
    taken = await mem.take(slots)
    for sc, t in zip(taken, arrivals):
        tau = 2.5e-3 - t
        assert sc.wait == pytest.approx(tau, abs=1e-15)
        got = sims.pauli_vector(sc.state)
        # analytic: every weight-k Pauli decays by exp(-k tau / T2)
        np.testing.assert_allclose(got, pv * np.exp(-k * tau / T2), atol=1e-12)
        np.testing.assert_allclose(sc.survival, math.exp(-tau / T2))
    assert len(mem) == 0 and mem.counters["taken"] == 3


async def test_take_at_explicit_time_and_dephasing_model(rho3):
    mem = SimulatedMemory(capacity=1, t2=T2, model="dephasing", clock=ManualClock())
    slot = await mem.put(Copy(rho3, t=1.0))
    (sc,) = await mem.take([slot], at=1.0 + 1e-3)
    assert sc.wait == pytest.approx(1e-3)
    kxy = _weights(3, count="XY")  # pure dephasing: only X and Y factors decay
    np.testing.assert_allclose(sims.pauli_vector(sc.state), sims.pauli_vector(rho3) * np.exp(-kxy * 1e-3 / T2), atol=1e-12)
    assert sc.survival is None  # no depolarizing-mixture structure


async def test_no_wait_no_change_and_ideal_memory(rho3):
    mem = SlotMemory(2, clock=ManualClock())
    assert isinstance(mem.coherence, IdealCoherence) and math.isinf(mem.t2)
    s = await mem.put(Copy(rho3, t=0.0))
    (sc,) = await mem.take([s], at=5.0)
    assert sc.wait == 5.0 and sc.state is rho3
    direct = StoredCopy.direct(Copy(rho3, t=1.0), at=1.0)
    assert direct.wait == 0.0 and direct.state is rho3


@pytest.mark.parametrize("policy", ["reject", "evict_oldest"])
async def test_capacity_holds_under_a_burst(policy):
    clock = ManualClock()
    mem = SlotMemory(4, on_full=policy, clock=clock)
    slots = [await mem.put(Copy(None, t=0.001 * i, source=f"c{i}")) for i in range(10)]
    assert len(mem) == 4 == mem.counters["peak_occupancy"]
    assert mem.free == 0
    if policy == "reject":
        assert slots[4:] == [None] * 6 and mem.counters["rejected"] == 6
        assert [i.source for i in mem.waiting()] == ["c0", "c1", "c2", "c3"]
    else:
        assert None not in slots and mem.counters["evicted_full"] == 6
        assert [i.source for i in mem.waiting()] == ["c6", "c7", "c8", "c9"]
    # every copy is accounted for: stored now, rejected or evicted
    c = mem.counters
    assert len(mem) + c["rejected"] + c["evicted_full"] == 10


async def test_block_policy_applies_backpressure_without_exceeding_capacity():
    mem = SlotMemory(2, on_full="block", clock=ManualClock())
    first = [await mem.put(Copy(None, t=0.0)) for _ in range(2)]
    waiters = [asyncio.create_task(mem.put(Copy(None, t=0.0, source=f"w{i}"))) for i in range(3)]
    await asyncio.sleep(0.01)
    assert not any(w.done() for w in waiters) and len(mem) == 2
    assert mem.counters["blocked"] == 3
    await mem.take(first[:1])
    await asyncio.sleep(0.01)
    assert sum(w.done() for w in waiters) == 1 and len(mem) == 2
    for w in waiters:
        w.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    assert len(mem) <= mem.capacity


async def test_max_wait_eviction_is_counted_and_timed():
    clock = ManualClock()
    mem = SlotMemory(8, max_wait=1e-3, clock=clock)
    for t in (0.0, 0.2e-3, 0.9e-3, 1.5e-3):
        await mem.put(Copy(None, t=t))
    clock.advance_to(1.6e-3)
    gone = await mem.sweep()
    assert len(gone) == 2 and mem.counters["evicted_expired"] == 2
    # released when they expired, not when the sweep happened to run
    assert [g.released for g in gone] == pytest.approx([1e-3, 1.2e-3])
    assert [g.wait for g in gone] == pytest.approx([1e-3, 1e-3])
    assert len(mem) == 2


async def test_errors_and_zero_capacity():
    mem = SlotMemory(1, clock=ManualClock())
    with pytest.raises(KeyError):
        await mem.take([0])
    s = await mem.put(Copy(None, t=0.0))
    with pytest.raises(KeyError):
        await mem.take([s, s])
    assert len(mem) == 1  # nothing released by a failed take
    none = SlotMemory(0)
    assert await none.put(Copy(None, t=0.0)) is None and none.counters["rejected"] == 1
    with pytest.raises(ValueError):
        SlotMemory(-1)
    with pytest.raises(ValueError):
        SlotMemory(1, on_full="drop")
    assert isinstance(mem, QuantumMemory) and isinstance(SimulatedMemory(1, t2=1.0), QuantumMemory)


async def test_pairs_by_key_and_take_oldest():
    mem = SlotMemory(4, clock=ManualClock())
    await mem.put(Copy(None, t=0.0, source="a"))
    await mem.put(Copy(None, t=0.1, source="b"))
    await mem.put(Copy(None, t=0.2, source="a"))
    assert mem.oldest("b").arrival == 0.1
    got = await mem.take_oldest("a", count=2, at=1.0)
    assert [g.wait for g in got] == pytest.approx([1.0, 0.8])
    assert [i.key for i in mem.waiting()] == ["b"]


def test_depolarizing_mixture_is_exact_for_bell_and_shadows(rho3):
    """Re-randomising depolarized qubits of clean samples = sampling the
    decohered state (exact distributions, compared by enumeration of the mixture)."""
    tau_a, tau_b = 0.7e-3, 0.0
    coh = SimsCoherence(T2)
    pa, pb = float(coh.survival(tau_a)), float(coh.survival(tau_b))
    exact = sims.bell_probabilities(coh.apply(rho3, tau_a), rho3)
    # mixture: each wire kept with prob pa*pb, else uniform code
    clean = sims.bell_probabilities(rho3).reshape(4, 4, 4)
    q = pa * pb
    mix = clean
    for axis in range(3):
        marg = mix.sum(axis=axis, keepdims=True) / 4.0
        mix = q * mix + (1 - q) * np.broadcast_to(marg, mix.shape)
    np.testing.assert_allclose(mix.reshape(-1), exact, atol=1e-12)
    # and the sampling helpers draw from it
    rng = np.random.default_rng(3)
    codes = sims.BellSampler(rho3).sample_codes(200_000, rng)
    codes = depolarize_bell_codes(codes, q, rng)
    idx = codes.astype(np.int64) @ np.array([16, 4, 1])
    freq = np.bincount(idx, minlength=64) / len(idx)
    assert np.max(np.abs(freq - exact) / np.sqrt(exact / len(idx) + 1e-12)) < 5.5
    b, o = sims.ShadowSampler(rho3).sample_arrays(200_000, rng)
    o = depolarize_shadow_bits(o, pa, rng)
    exact_s = sims.shadow_probabilities(coh.apply(rho3, tau_a))
    idx = (2 * b + o).astype(np.int64) @ np.array([36, 6, 1])
    freq = np.bincount(idx, minlength=216) / len(idx)
    assert np.max(np.abs(freq - exact_s) / np.sqrt(exact_s / len(idx) + 1e-12)) < 5.5


async def test_backend_decoheres_by_wait_and_reweighting_undoes_it(rho3):
    """Bell pairs whose first copy waited tau: unweighted means decay by
    exp(-k tau/T2); BellEstimator(t2=T2) recovers tr(P rho)^2 (fast and exact paths)."""
    clock = ManualClock()
    mem = SimulatedMemory(capacity=1, t2=T2, clock=clock)
    tau = 0.5e-3
    items = []
    for i in range(1500):
        s = await mem.put(Copy(rho3, t=float(i)))
        (a,) = await mem.take([s], at=i + tau)
        items.append((a, StoredCopy.direct(Copy(rho3, t=i + tau), i + tau)))
    plan = MeasurementPlan("bell", tuple(items))
    obs = ["ZZI", "XIX", "YYZ", "IZI"]
    pv = dict(zip(["".join(w) for w in itertools.product("IXYZ", repeat=3)], sims.pauli_vector(rho3)))
    truth = np.array([pv[o] ** 2 for o in obs])
    k = np.array([sum(c != "I" for c in o) for o in obs])
    for exact in (False, True):
        backend = SimulatedBackend(seed=5, exact=exact)
        (batch,) = await backend.measure(plan)
        assert batch.T == 1500 and np.allclose(batch.wait, tau)
        raw = BellEstimator(obs)
        raw.update(batch)
        e = raw.estimate()
        assert np.all(np.abs(e.values - truth * np.exp(-k * tau / T2)) < 4.5 * e.stderr + 1e-3)
        fixed = BellEstimator(obs, t2=T2)
        fixed.update(batch)
        f = fixed.estimate()
        assert np.all(np.abs(f.values - truth) < 4.5 * f.stderr + 1e-3)


def test_memory_by_name():
    from qsense.acquisition.memory import make_memory

    m = make_memory("simulated", capacity=3, t2=1e-3)
    assert isinstance(m, SimulatedMemory) and m.capacity == 3 and m.t2 == 1e-3
    with pytest.raises(ValueError):
        make_memory("bucket")
    # that the core never loads qsense.sims is checked in tests/test_layout.py


def test_memory_declares_one_decoherence_model():
    """The memory's decoherence model is the object Bell estimators and the scheduler share."""
    import warnings

    from qsense.estimators.decoherence import T1T2, DecoherenceMismatchWarning, Dephasing, Depolarizing, check_decoherence
    from qsense.sims.memory_sim import SimulatedMemory

    assert SlotMemory(2).decoherence is None  # a perfect memory: nothing to undo
    assert SimulatedMemory(2, t2=1e-3).decoherence == Depolarizing(1e-3)  # default behaviour unchanged
    mem = SimulatedMemory(2, t2=1e-3, model="dephasing")
    assert mem.decoherence == Dephasing(1e-3) and mem.t2 == 1e-3
    assert SimulatedMemory(2, t2=1e-3, t1=2e-3, model="t1t2").decoherence == T1T2(2e-3, 1e-3)
    # an explicit model on a plain slot memory (e.g. hardware described by the user)
    hw = SlotMemory(2, decoherence=Dephasing(5e-3))
    assert hw.decoherence == Dephasing(5e-3) and hw.t2 == 5e-3
    with pytest.warns(DecoherenceMismatchWarning, match="contradicts"):
        SlotMemory(2, sims.memory_sim.SimsCoherence(t2=1e-3), decoherence=Dephasing(1e-3))
    with pytest.raises(ValueError, match="DecoherenceModel"):
        SlotMemory(2, decoherence="dephasing")
    # estimators built from the memory's model agree; a depolarizing one does not
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_decoherence(mem, BellEstimator(["ZZ"], decoherence=mem.decoherence))
    with pytest.warns(DecoherenceMismatchWarning, match="reweights as Depolarizing"):
        assert not check_decoherence(mem, BellEstimator(["ZZ"], t2=1e-3))
