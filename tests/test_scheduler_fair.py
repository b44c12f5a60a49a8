"""The scheduler's claim, tested fairly: the adaptive policy against the
hindsight-best fixed policy of a fraction × cap grid (seeded runs of the real
pipeline, scheduler, memory, sampler and TargetSet; the harness is
benchmarks/bench_scheduler_fair.py on its 6-qubit problem), a deliberately bad
policy that the same criterion must reject, the drifting source, and the
piston phase diffusion in the wait-cap choice."""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import math
import pathlib
import sys

import numpy as np
import pytest
from scipy import integrate

from qsense.acquisition.memory import Copy, ManualClock
from qsense.acquisition.scheduler import AdaptivePolicy, PlanContext, Scheduler, plan_adaptive
from qsense.acquisition.targets import Expval, PauliSquare, TargetSet, WaitMoments, visibility_squared, wait_moment
from qsense.sims.memory_sim import SimulatedMemory

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_scheduler_fair", ROOT / "benchmarks" / "bench_scheduler_fair.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


fair = _bench()
COPIES = 1200


def runs(sc, spec, seeds):
    return [fair.figure(sc, fair.run_one((sc, spec, s))[3]) for s in seeds]


# -- the comparison ------------------------------------------------------------------------------------
def test_adaptive_within_ci_of_hindsight_best_fixed_at_t2_inf_and_a_bad_policy_is_not():
    """T2 = ∞: the best of four fixed fractions, picked on the same 8 seeds, against adaptive
    (no hindsight); a fixed fraction far from the optimum fails the same test."""
    sc = fair.stationary(math.inf, COPIES, "small6")
    seeds = range(8)
    fixed = {f: runs(sc, ("fixed", f, None), seeds) for f in (0.09, 0.14, 0.2, 0.45)}
    best = min(fixed, key=lambda f: np.mean(fixed[f]))
    _, lo, hi = fair.mean_ci(fixed[best])
    adaptive = runs(sc, ("adaptive",), seeds)
    assert np.mean(adaptive) <= hi, (np.mean(adaptive), best, lo, hi)
    # the criterion can fail: f = 0.45 spends far too many copies on pairs
    assert best != 0.45 and np.mean(fixed[0.45]) > hi * 1.2, (np.mean(fixed[0.45]), hi)


@pytest.mark.slow
def test_finite_t2_and_drifting_source_against_the_fixed_grid():
    """λT2 = 10: adaptive within the CI of the hindsight-best (f, cap), while the adaptive
    rule told the wrong T2 (so it never caps a wait) is far outside it.  Drifting source
    (the benchmark's 8-qubit problem, λ drops 5× half-way through 6,000 copies): adaptive
    significantly below fixed policies that its static plan would pick, but *not* below the
    hindsight-best (f = 0.40, cap 0.7/λ), which front-loads pairs while they are cheap and
    was 0.8% better over 50 seeds (docs/scheduler.md): held to within 4% of it here."""
    seeds = range(6)
    sc = fair.stationary(1e-3, COPIES, "small6")
    grid = [("fixed", f, c) for f in (0.14, 0.22, 0.33) for c in (None, 0.7, 1.2)]
    fixed = {s: runs(sc, s, seeds) for s in grid}
    best = min(fixed, key=lambda s: np.mean(fixed[s]))
    _, _, hi = fair.mean_ci(fixed[best])
    assert np.mean(runs(sc, ("adaptive",), seeds)) <= hi, (best, hi)
    assert np.mean(runs(sc, ("adaptive-blind",), seeds[:3])) > 2 * hi
    dr = fair.drifting(6000)
    seeds = range(4)
    adaptive = runs(dr, ("adaptive",), seeds)
    for s in [("fixed", 0.22, 0.7), ("fixed", 0.27, 0.7)]:
        assert fair.beats(adaptive, runs(dr, s, seeds)), s
    best = runs(dr, ("fixed", 0.40, 0.7), seeds)
    assert np.mean(adaptive) < 1.04 * np.mean(best), (np.mean(adaptive), np.mean(best))
    assert not fair.beats(runs(dr, ("adaptive-blind",), seeds[:2]), best[:2])


def test_confidence_intervals():
    m, lo, hi = fair.mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and lo == pytest.approx(2.0 - 4.302653 / math.sqrt(3)) and hi == pytest.approx(2.0 + 4.302653 / math.sqrt(3))
    assert fair.mean_ci([1.0, math.inf]) == (math.inf, math.inf, math.inf)
    d, lo, hi = fair.diff_ci([1.0, 2.0, 3.0], [11.0, 12.0, 13.0])
    assert d == -10.0 and lo < -10.0 < hi < 0


def test_bench_rejects_too_few_seeds(capsys):
    assert fair.main(["--seeds", "1"]) == 2
    assert "--seeds" in capsys.readouterr().err


# -- piston phase diffusion in the wait-cap choice -----------------------------------------------------
def test_wait_moment_with_piston_against_quadrature():
    rate, t2, D = 1e4, 2e-3, 700.0
    for j, cap in [(2, 1e-4), (4, 3e-4), (12, 5e-5), (0, 1e-4)]:
        a = j / t2 + (2 * D if j else 0.0)
        num = integrate.quad(lambda t, a=a: rate * math.exp(-rate * t) * math.exp(a * t), 0, cap)[0]
        want = num / -math.expm1(-rate * cap)
        assert wait_moment(j, rate, t2, cap, piston=D) == pytest.approx(want, rel=1e-10)
        assert WaitMoments(rate, t2, [cap], piston=D)(j)[0] == pytest.approx(want, rel=1e-10)
    # no cap: λ/(λ − a), and the piston alone (T2 = ∞) diverges once λ <= 2D
    assert wait_moment(4, rate, math.inf, None, piston=D) == pytest.approx(rate / (rate - 2 * D))
    assert wait_moment(4, 1000.0, math.inf, None, piston=600.0) == math.inf
    assert WaitMoments(1000.0, math.inf, [math.inf], piston=600.0)(4)[0] == math.inf


TELESCOPE = [Expval("Z0"), PauliSquare("X0 X1 X2 X3 X4 X5")]


@pytest.mark.parametrize("t2", [math.inf, 1e-2, 1e-3])
def test_larger_piston_diffusion_shortens_the_wait_cap(t2):
    """The cap falls as D grows (the visibility lost per wait grows), never rises."""
    caps = []
    for D in (0.0, 300.0, 1000.0, 3000.0, 10000.0):
        p = plan_adaptive(TELESCOPE, {"<Z0>": 0.1}, rate=1e4, t2=t2, piston_diffusion=D)
        caps.append(math.inf if p.cap is None else p.cap)
        assert p.piston == D and (D == 0 or "piston" in p.reason)
    assert all(b <= a for a, b in itertools.pairwise(caps)), caps
    assert caps[-1] < 0.6 * caps[0] and caps[-1] < 1e-4, caps
    if math.isinf(t2):
        assert caps[0] == math.inf  # nothing is lost by waiting: no cap


def _first_plan(**kw):
    ts = TargetSet(TELESCOPE, tol=0.05, t2=1e-2, **kw.pop("ts_kw", {}))
    mem = SimulatedMemory(capacity=1, t2=1e-2, clock=ManualClock())
    sched = Scheduler(AdaptivePolicy(ts), mem, rate_hint=1e4, **kw)
    asyncio.run(sched.on_arrival(Copy(state=None, t=0.0, source="s", wires=tuple(range(6)))))
    return sched.plan


def test_piston_reaches_the_scheduler_from_the_target_set_or_its_own_argument():
    plain = _first_plan()
    from_ts = _first_plan(ts_kw={"piston_diffusion": 3000.0})
    explicit = _first_plan(piston_diffusion=3000.0)
    assert plain.piston == 0.0 and from_ts.piston == 3000.0 and explicit.piston == 3000.0
    assert from_ts.cap == explicit.cap < plain.cap
    # an explicit 0 overrides the TargetSet's value
    assert _first_plan(ts_kw={"piston_diffusion": 3000.0}, piston_diffusion=0.0).cap == plain.cap
    # a bare PlanContext (no piston said) falls back to the TargetSet's value
    ts = TargetSet(TELESCOPE, tol=0.05, t2=1e-2, piston_diffusion=3000.0)
    ctx = PlanContext(rate=1e4, t2=1e-2, capacity=1, keys=1, n=6, copies=0, now=0.0)
    assert AdaptivePolicy(ts).plan(ctx).cap == from_ts.cap
    assert "piston D=3e+03" in from_ts.describe()


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, "fast"])
def test_bad_piston_diffusion_is_a_clear_error(bad):
    for make in (
        lambda: TargetSet(TELESCOPE, piston_diffusion=bad),
        lambda: plan_adaptive(TELESCOPE, rate=1e4, piston_diffusion=bad),
        lambda: Scheduler("fixed", SimulatedMemory(capacity=1), ratio=0.2, piston_diffusion=bad),
        lambda: WaitMoments(1e4, 1e-3, [1e-4], piston=bad),
    ):
        with pytest.raises(ValueError, match="piston_diffusion"):
            make()


def test_visibility_target_pays_for_the_piston():
    """A visibility's Bell cost at a fixed cap grows by the piston's second moment."""
    v = visibility_squared(0, 1)
    m0 = WaitMoments(1e4, 1e-2, [2e-4])
    mD = WaitMoments(1e4, 1e-2, [2e-4], piston=2000.0)
    assert v.bell_shots_caps(0.1, 0.05, mD)[0] > v.bell_shots_caps(0.1, 0.05, m0)[0]


# -- the first plan, before the arrival rate is measured ------------------------------------------------
def _adaptive_scheduler(**kw):
    ts = TargetSet(TELESCOPE, tol=0.05, t2=1e-3)
    return Scheduler(AdaptivePolicy(ts), SimulatedMemory(capacity=1, t2=1e-3, clock=ManualClock()), **kw)


def test_adaptive_does_not_pair_on_a_guessed_rate():
    """Without arrivals or a rate_hint the rate is a guess: no openers until 16 arrivals have
    measured it (then the usual capped plan); a caller's rate_hint is planned on at once."""
    sched = _adaptive_scheduler()
    def copy(i):
        return Copy(state=None, t=i * 1e-4, source="s", wires=tuple(range(6)))

    for i in range(15):
        asyncio.run(sched.on_arrival(copy(i)))
    assert sched.plan.pair_fraction == 0.0 and "not measured" in sched.plan.reason
    assert sched.counters["opened"] == 0
    asyncio.run(sched.on_arrival(copy(15)))
    assert sched.plan.pair_fraction > 0 and sched.plan.cap is not None
    hinted = _adaptive_scheduler(rate_hint=1e4)
    asyncio.run(hinted.on_arrival(copy(0)))
    assert hinted.plan.pair_fraction > 0 and hinted.plan.cap is not None


@pytest.mark.slow
def test_a_brightening_source_is_not_poisoned_by_the_first_plan():
    """The seed whose first opener (planned on the guessed rate 1000/T2, uncapped) waited
    ~2 ms at T2 = 1 ms and left the 8-qubit purity at 5,709 × its tolerance: now finite and small."""
    sc = fair.drifting(6000, rates=(2000.0, 1e4))
    r = fair.run_one((sc, ("adaptive",), 0))[3]
    assert r["worst"] < 1.5, r
