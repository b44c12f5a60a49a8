"""The scheduler: the adaptive rule against independent computations, the cost
model against measured variances, and copy-by-copy execution."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from qsense import BellEstimator, ShadowPurity, sims
from qsense.acquisition.backends import depolarize_bell_codes
from qsense.acquisition.memory import Copy, ManualClock, SlotMemory
from qsense.acquisition.scheduler import (
    AdaptivePolicy,
    BellPolicy,
    FixedPolicy,
    Scheduler,
    ShadowPolicy,
    make_policy,
    plan_adaptive,
)
from qsense.acquisition.targets import (
    Expval,
    PauliSquare,
    Purity,
    TargetSet,
    purity_shadow_variance,
    visibility_squared,
    wait_moment,
)
from qsense.records import BellBatch
from qsense.sims.memory_sim import SimulatedMemory

TOL = 0.05


# -- independent formulas (written out again on purpose) -----------------------------------
def shadow_copies_square(s, k, tol=TOL):
    a = 4 * s * (3**k - s)
    b = 2 * (9**k - s * s)
    return (a + math.sqrt(a * a + 4 * b * tol**2)) / (2 * tol**2)


def bell_copies_square(s, k, lam_t2, tol=TOL):
    """docs/physics.md §4: 2 [λT2/(λT2 − 2k) − s²]/ε² copies, inf when it diverges."""
    if math.isinf(lam_t2):
        m = 1.0
    elif lam_t2 <= 2 * k:
        return math.inf
    else:
        m = lam_t2 / (lam_t2 - 2 * k)
    return 2 * (m - s * s) / tol**2


# -- the rule -------------------------------------------------------------------------------
def test_signed_paulis_only_means_shadows_only():
    targets = [Expval("Z0"), Expval("X0 X1"), Expval("Y0 Z1 Z2")]
    plan = plan_adaptive(targets, {}, rate=1e4, t2=1e-2, capacity=4, tol=TOL)
    assert plan.pair_fraction == 0.0
    assert set(plan.assignment.values()) == {"shadow"}
    # the binding target is the weight-3 Pauli: (27 - 0)/tol^2 copies
    assert plan.copies_to_finish == pytest.approx(27 / TOL**2, rel=1e-9)


@pytest.mark.parametrize("s", [0.1, 0.3, 0.6])
def test_switches_family_with_t2_as_computed_independently(s):
    """One weight-3 |<P>|^2 target: Bell (f = 1) iff its copies < shadow copies."""
    k, lam = 3, 1e4
    target = [PauliSquare("Z0 X1 Y2")]
    NS = shadow_copies_square(s, k)
    decisions = []
    for lam_t2 in [math.inf, 100.0, 12.0, 6.5, 6.2, 5.0]:
        NB = bell_copies_square(s, k, lam_t2)
        plan = plan_adaptive(target, {target[0].label: s}, rate=lam, t2=lam_t2 / lam, capacity=1, tol=TOL, caps=[None])
        want = 1.0 if NB < NS else 0.0
        assert plan.pair_fraction == want, (lam_t2, NS, NB, plan.describe())
        assert plan.copies_to_finish == pytest.approx(min(NS, NB), rel=1e-6)
        decisions.append(want)
    assert decisions[0] == 1.0 and decisions[-1] == 0.0  # the family really switched


def test_switches_family_with_targets():
    """Same memory, different targets: a small 1-local |<P>|^2 is cheapest by
    shadows, a weight-8 one by Bell pairs (independent computation of both)."""
    lam, t2, s = 1e4, 1e-2, 0.05
    low, high = PauliSquare("Z0"), PauliSquare("ZZZZZZZZ")
    for t, k, want in ((low, 1, 0.0), (high, 8, 1.0)):
        NS = shadow_copies_square(s, k)
        NB = bell_copies_square(s, k, lam * t2)
        assert (1.0 if NB < NS else 0.0) == want
        plan = plan_adaptive([t], {t.label: s}, rate=lam, t2=t2, capacity=1, tol=TOL, caps=[None])
        assert plan.pair_fraction == want
        assert plan.assignment[t.label] == ("bell" if want else "shadow")
        # with the cap search the decision stands
        assert plan_adaptive([t], {t.label: s}, rate=lam, t2=t2, tol=TOL).pair_fraction == want
    # a larger |<P>|^2 favours Bell even at weight 1: 2(1 - s^2) < 4 s (3 - s) per copy
    assert plan_adaptive([low], {low.label: 0.5}, rate=lam, t2=math.inf, tol=TOL).pair_fraction == 1.0


def test_mixed_targets_fraction_and_never_worse_than_physics_rule():
    """Signed <Z0> (shadows only) + 8-qubit purity (Bell): the optimum solved by hand."""
    lam, t2, p, mu = 1e4, math.inf, 0.7, 0.2
    targets = [Expval("Z0"), Purity(n=8)]
    values = {"<Z0>": mu, "purity": p}
    plan = plan_adaptive(targets, values, rate=lam, t2=t2, capacity=1, tol=TOL, caps=[None])
    NA = (3 - mu**2) / TOL**2  # <Z0> by shadows
    a, b = purity_shadow_variance(p, 8)
    NSP = (a + math.sqrt(a * a + 4 * b * TOL**2)) / (2 * TOL**2)
    SB = (1 - p * p) / TOL**2  # Bell shots for the purity (T2 = inf: per-shot variance 1 - p^2)
    # maximise min((1-f)/NA, (1-f)/NSP + (f/2)/SB): the two lines cross at f*
    f_star = (1 / NSP - 1 / NA) / (1 / NSP - 1 / NA - 1 / (2 * SB))
    f_star = min(max(f_star, 0.0), 1.0)
    assert plan.pair_fraction == pytest.approx(f_star, abs=1e-3)
    assert plan.copies_to_finish == pytest.approx(NA / (1 - f_star), rel=1e-3)
    # docs/physics.md §4: assign each target to its cheaper family, time (N_S* + N_B*)/λ
    physics = NA + 2 * SB
    assert plan.copies_to_finish <= physics * (1 + 1e-9)
    assert plan.assignment == {"<Z0>": "shadow", "purity": "both"}


def test_no_memory_means_no_bell_and_cap_rescues_short_t2():
    t = [PauliSquare("ZZZZZZZZ")]
    assert plan_adaptive(t, {}, rate=1e4, t2=1.0, capacity=0, tol=TOL).pair_fraction == 0.0
    # lambda T2 = 10 < 2k = 16: without a cap the reweighting variance diverges,
    # a cap of about a mean gap makes Bell affordable again
    nocap = plan_adaptive(t, {}, rate=1e4, t2=1e-3, capacity=1, tol=TOL, caps=[None])
    capped = plan_adaptive(t, {}, rate=1e4, t2=1e-3, capacity=1, tol=TOL)
    assert nocap.pair_fraction == 0.0 and capped.pair_fraction > 0.0
    assert capped.cap is not None and capped.copies_to_finish < nocap.copies_to_finish


def test_wait_moment_closed_form_against_quadrature():
    lam, t2 = 1e4, 1e-3
    for j in (0, 2, 6, 12, 30):
        for cap in (None, 0.5e-4, 3e-4):
            if cap is None and lam * t2 <= j:
                assert math.isinf(wait_moment(j, lam, t2, cap))
                continue
            hi = cap if cap is not None else 50 / lam
            x = np.linspace(0, hi, 200001)
            dens = lam * np.exp(-lam * x)
            num = np.trapezoid(dens * np.exp(j * x / t2), x)
            den = np.trapezoid(dens, x) if cap is not None else 1.0
            assert wait_moment(j, lam, t2, cap) == pytest.approx(num / den, rel=1e-4)


# -- the cost model against measured variances -----------------------------------------------
def test_bell_reweighted_variance_matches_prediction():
    """Waits tau ~ Exp(λ), depolarized pairs, reweighted by e^{k tau/T2}: the per-shot
    variance is λT2/(λT2 − 2k) − s² (docs/physics.md §3)."""
    rng = np.random.default_rng(7)
    psi = sims.product_state("0+")  # <Z0 X1> = 1
    lam, t2, T = 1e4, 1e-3, 200_000
    tau = rng.exponential(1 / lam, T)
    codes = sims.BellSampler(psi).sample_codes(T, rng)
    codes = depolarize_bell_codes(codes, np.exp(-tau / t2)[:, None], rng)
    est = BellEstimator(["ZX", "ZI"], t2=t2)
    est.update(BellBatch(codes, wait=tau))
    e = est.estimate()
    for j, k in enumerate((2, 1)):
        predicted = PauliSquare("Z0 X1" if k == 2 else "Z0").bell_shot_variance(1.0, lambda m: wait_moment(m, lam, t2))
        assert predicted == pytest.approx(lam * t2 / (lam * t2 - 2 * k) - 1.0)
        measured = e.stderr[j] ** 2 * T
        assert measured == pytest.approx(predicted, rel=0.1)
        assert abs(e.values[j] - 1.0) < 5 * e.stderr[j]


def test_purity_shadow_variance_model_matches_estimator():
    """The product-state model of the shadow purity variance predicts the
    U-statistic's measured spread for a product state."""
    rng = np.random.default_rng(8)
    m, N, reps = 4, 400, 60
    rho1 = np.array([[0.85, 0.2], [0.2, 0.15]])
    rho = rho1
    for _ in range(m - 1):
        rho = np.kron(rho, rho1)
    p = float(np.trace(rho @ rho).real)
    sampler = sims.ShadowSampler(rho)
    vals = []
    for _ in range(reps):
        b, o = sampler.sample_arrays(N, rng)
        sp = ShadowPurity([range(m)])
        from qsense import ShadowBatch

        sp.update(ShadowBatch(b, o))
        vals.append(sp.purity().values[0])
    a, bq = purity_shadow_variance(p, m)
    predicted = a / N + bq / N**2
    measured = float(np.var(vals, ddof=1))
    assert abs(np.mean(vals) - p) < 4 * math.sqrt(predicted / reps)
    assert measured == pytest.approx(predicted, rel=0.45)  # 60 reps: ~18% relative noise on a variance


# -- execution ------------------------------------------------------------------------------------
async def _feed(sched, n_copies, rate=1e4, key=lambda i: "s", seed=0, n=2):
    rng = np.random.default_rng(seed)
    t = 0.0
    items = []
    for i in range(n_copies):
        t += rng.exponential(1 / rate)
        items += await sched.on_arrival(Copy(None, t=t, source=key(i), wires=tuple(range(n))))
    items += await sched.drain(t)
    return items


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.6, 1.0])
async def test_fixed_ratio_is_executed_and_partners_are_next_arrivals(ratio):
    mem = SlotMemory(1, clock=ManualClock())
    sched = Scheduler(FixedPolicy(ratio), mem)
    items = await _feed(sched, 2000)
    bell = [it for it in items if len(it) == 2]
    c = sched.counters
    assert c["bell_copies"] / 2000 == pytest.approx(ratio, abs=2e-3)
    assert c["shadow_copies"] + c["bell_copies"] + mem.counters.get("evicted_drain", 0) == 2000
    # a pair's first copy waited exactly until the very next arrival
    times = sorted(sc.copy.t for it in items for sc in it)
    pos = {t: i for i, t in enumerate(times)}
    for a, b in bell:
        assert b.wait == 0.0 and a.released == b.copy.t and a.wait == pytest.approx(b.copy.t - a.copy.t)
        assert pos[b.copy.t] == pos[a.copy.t] + 1


async def test_policies_by_name_and_extremes():
    assert isinstance(make_policy("shadow"), ShadowPolicy)
    assert isinstance(make_policy("bell"), BellPolicy)
    with pytest.raises(ValueError):
        make_policy("greedy")
    with pytest.raises(ValueError):
        FixedPolicy(1.5)
    mem = SlotMemory(1, clock=ManualClock())
    s = Scheduler("bell", mem)
    await _feed(s, 101)
    assert s.counters["bell_pairs"] == 50 and mem.counters["evicted_drain"] == 1  # the odd one out, counted
    s2 = Scheduler("shadow", SlotMemory(1, clock=ManualClock()))
    await _feed(s2, 100)
    assert s2.counters["shadow_copies"] == 100 and s2.counters["bell_pairs"] == 0


async def test_pairs_only_within_a_key_and_capacity_limits_open_pairs():
    mem = SlotMemory(1, clock=ManualClock())
    sched = Scheduler("bell", mem)
    items = await _feed(sched, 400, key=lambda i: "ab"[i % 2])
    for it in items:
        if len(it) == 2:
            assert it[0].copy.source == it[1].copy.source
    # two keys share one slot: the second key's openers find no slot and become shadows
    assert sched.counters["no_slot"] > 0
    c = sched.counters
    assert c["shadow_copies"] + c["bell_copies"] + sum(v for k, v in mem.counters.items() if k.startswith("evicted")) == 400


async def test_cap_evicts_or_salvages_and_counts():
    for salvage in (False, True):
        mem = SlotMemory(1, clock=ManualClock())
        sched = Scheduler(BellPolicy(cap=0.5e-4), mem, salvage=salvage)
        items = await _feed(sched, 1000, rate=1e4)
        c = sched.counters
        late = c["salvaged"] if salvage else c["expired_cap"]
        assert late > 0
        # P(next arrival later than cap) = exp(-λ cap) = exp(-0.5): about 60% of openers
        assert late / c["opened"] == pytest.approx(math.exp(-0.5), abs=0.07)
        for it in items:
            if len(it) == 2:
                assert it[0].wait <= 0.5e-4
        evicted = sum(v for k, v in mem.counters.items() if k.startswith("evicted"))
        assert c["shadow_copies"] + c["bell_copies"] + evicted == 1000


async def test_adaptive_replans_from_estimates_and_logs_reasoning(caplog):
    """The plan follows the running estimates: once the data say the state is
    pure, Bell purity shots are almost free and the pair fraction changes."""
    rng = np.random.default_rng(4)
    n = 6
    ts = TargetSet([Expval("Z0"), Purity()], tol=TOL)
    mem = SimulatedMemory(capacity=1, t2=None, clock=ManualClock())
    sched = Scheduler(AdaptivePolicy(ts), mem, replan_every=50)
    caplog.set_level(logging.INFO, logger="qsense.acquisition.scheduler")
    await _feed(sched, 20, n=n)
    first = sched.plan
    assert "plan at" in caplog.text and "purity" in caplog.text and sched.counters["replans"] >= 1
    # feed the estimator Bell data of a pure state (purity 1: every shot +1)
    pure = sims.product_state("0" * n)
    ts.update(sims.sample_bell(pure, 2000, seed=rng))
    ts.update(sims.sample_shadows(pure, 2000, seed=rng))
    await _feed(sched, 100, seed=1, n=n)
    assert 0 < sched.plan.pair_fraction < first.pair_fraction
    assert sched.counters["replans"] >= 3
    assert dict(sched.plan.assignment)["<Z0>"] == "shadow"


def test_bell_purity_variance_model_on_an_entangled_state():
    """Reweighted Bell purity shots of an entangled 6-qubit state with waits
    τ ~ Exp(λ) capped at c: measured per-shot variance vs the cost model."""
    rng = np.random.default_rng(9)
    psi = sims.random_circuit_state(6, 3, seed=2)
    rho = 0.8 * sims.to_density_matrix(psi) + 0.2 * np.eye(64) / 64
    p = float(np.trace(rho @ rho).real)
    lam, t2, cap, T = 1e4, 1e-3, 1.2e-4, 200_000
    tau = rng.exponential(1 / lam, 3 * T)
    tau = tau[tau < cap][:T]
    codes = sims.BellSampler(rho).sample_codes(T, rng)
    codes = depolarize_bell_codes(codes, np.exp(-tau / t2)[:, None], rng)
    est = BellEstimator([], t2=t2)
    est.update(BellBatch(codes, wait=tau))
    e = est.purity()
    assert abs(e.values[0] - p) < 5 * e.stderr[0]
    predicted = Purity(n=6).bell_shot_variance(p, lambda j: wait_moment(j, lam, t2, cap))
    assert e.stderr[0] ** 2 * T == pytest.approx(predicted, rel=0.1)


def test_target_set_visibility_and_combination():
    """|rho_jk|^2 of a W state from both families, combined by inverse variance."""
    rng = np.random.default_rng(12)
    w = sims.w_state(3)  # rho_jk = 1/3 in the single-excitation basis
    ts = TargetSet([visibility_squared(0, 2), PauliSquare("Z0 Z1"), Expval("Z1")], tol=0.05)
    ts.update(sims.sample_shadows(w, 20_000, seed=rng))
    ts.update(sims.sample_bell(w, 5_000, seed=rng))
    fam = ts.by_family()
    e = ts.estimate()
    truth = {"|rho_02|^2": 1 / 9, "<Z0 Z1>^2": (1 / 3) ** 2, "<Z1>": 1 / 3}
    for i, lab in enumerate(e.labels):
        assert abs(e.values[i] - truth[lab]) < 4.5 * e.stderr[i], (lab, e)
        if lab != "<Z1>":
            (vs, ss, _), (vb, sb, _) = fam[lab]["shadow"], fam[lab]["bell"]
            assert e.stderr[i] < min(ss, sb)  # combining helps
    assert set(fam["<Z1>"]) == {"shadow"}
    # the cost model handles the sum target
    vis = ts.targets[0]
    assert math.isfinite(vis.shadow_copies(1 / 9, TOL)) and math.isfinite(vis.bell_shots(1 / 9, TOL, lambda j: 1.0))


def test_scheduler_shares_the_memory_decoherence_model():
    import warnings

    from qsense.estimators.decoherence import DecoherenceMismatchWarning, Dephasing, Depolarizing

    mem = SimulatedMemory(4, t2=1e-3, model="dephasing", clock=ManualClock())
    s = Scheduler("bell", mem)
    assert s.decoherence is mem.decoherence or s.decoherence == Dephasing(1e-3)
    assert s.t2 == 1e-3
    s = Scheduler("bell", SlotMemory(4, clock=ManualClock()), decoherence=Depolarizing(2e-3))
    assert s.t2 == 2e-3 and s.decoherence == Depolarizing(2e-3)
    # the TargetSet reweights as depolarizing at its t2: a dephasing memory is a mismatch
    ts = TargetSet([PauliSquare("Z0 Z1")], tol=0.05, t2=1e-3)
    with pytest.warns(DecoherenceMismatchWarning):
        Scheduler(AdaptivePolicy(ts), mem)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DecoherenceMismatchWarning)
        Scheduler(AdaptivePolicy(ts), SimulatedMemory(4, t2=1e-3, clock=ManualClock()))
