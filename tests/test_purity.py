"""Shadow purity: the U-statistic is unbiased and equals its per-Pauli streaming form."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from exact import random_density, reduced

from qsense import ShadowBatch, ShadowPurity
from qsense.estimators.purity import class_kernel


def brute_u_statistic(b: ShadowBatch, sub) -> float:
    cls = 2 * b.bases[:, sub].astype(int) + b.outcomes[:, sub]
    g = class_kernel()
    K = np.ones((b.T, b.T))
    for j in range(len(sub)):
        K *= g[cls[:, j][:, None], cls[:, j][None, :]]
    np.fill_diagonal(K, 0)
    return K.sum() / (b.T * (b.T - 1))


def pauli_form(b: ShadowBatch, sub) -> float:
    """docs/physics.md §1 streaming form: 2^-|A| sum_P (S_P^2 - Q_P) / (N(N-1))."""
    N = b.T
    total = 0.0
    for letters in itertools.product(range(4), repeat=len(sub)):
        x = np.ones(N)
        for q, L in zip(sub, letters):
            if L == 0:
                continue
            x *= np.where(b.bases[:, q] == L - 1, 3.0 * (1 - 2.0 * b.outcomes[:, q]), 0.0)
        total += x.sum() ** 2 - (x**2).sum()
    return total / (2 ** len(sub) * N * (N - 1))


def test_histogram_form_equals_pair_sum_and_pauli_form():
    rng = np.random.default_rng(0)
    b = ShadowBatch(rng.integers(0, 3, (300, 4)), rng.integers(0, 2, (300, 4)))
    for sub in [(0,), (1, 3), (0, 1, 2)]:
        est = ShadowPurity([sub])
        est.update(b[:100])
        est.update(b[100:])
        u = est.purity().values[0]
        assert u == pytest.approx(brute_u_statistic(b, list(sub)), abs=1e-10)
        assert u == pytest.approx(pauli_form(b, list(sub)), abs=1e-10)


def test_unbiased_and_error_bars_honest():
    from qsense import sims

    rng = np.random.default_rng(3)
    rho = random_density(3, rng, rank=2)
    subs = [(0,), (0, 2), (0, 1, 2)]
    truth = np.array([np.real(np.trace(r @ r)) for r in (reduced(rho, s, 3) for s in subs)])
    vals, covered, covered1 = [], 0, 0
    for seed in range(120):
        est = ShadowPurity(subs)
        est.update(sims.sample_shadows(rho, 300, seed=seed))
        p = est.purity()
        vals.append(p.values)
        covered += int(np.sum(np.abs(p.values - truth) <= 2 * p.stderr))
        covered1 += int(np.sum(np.abs(p.values - truth) <= p.stderr))
    vals = np.array(vals)
    # mean over 120 independent runs is within 4 standard errors of the truth (unbiased)
    se_mean = vals.std(axis=0) / np.sqrt(len(vals))
    assert np.all(np.abs(vals.mean(axis=0) - truth) < 4 * se_mean), (vals.mean(axis=0), truth)
    # 2-sigma bars cover ~95%, 1-sigma ~68% (neither too narrow nor too wide)
    assert covered / (120 * len(subs)) > 0.9
    assert 0.6 < covered1 / (120 * len(subs)) < 0.78


def test_entropy_and_checkpoint():
    rng = np.random.default_rng(4)
    b = ShadowBatch(rng.integers(0, 3, (500, 3)), rng.integers(0, 2, (500, 3)))
    est = ShadowPurity([(0, 1)])
    est.update(b)
    back = ShadowPurity.from_bytes(est.to_bytes())
    assert back.purity().values[0] == est.purity().values[0]
    e = est.entropy()
    p = est.purity().values[0]
    if p > 0:
        assert e.values[0] == pytest.approx(-np.log2(p))
    a, c = ShadowPurity([(0, 1)]), ShadowPurity([(0, 1)])
    a.update(b[:200])
    c.update(b[200:])
    assert a.merge(c).purity().values[0] == pytest.approx(p, abs=1e-12)


def test_bad_subsystems():
    with pytest.raises(ValueError, match="limit is 16"):
        ShadowPurity([tuple(range(17))])
    with pytest.raises(ValueError, match="repeats"):
        ShadowPurity([(0, 0)])
    est = ShadowPurity([(0, 5)])
    with pytest.raises(ValueError, match="outside"):
        est.update(ShadowBatch(np.zeros((3, 2)), np.zeros((3, 2))))
    with pytest.raises(ValueError, match="two snapshots"):
        ShadowPurity([(0,)]).purity()


def test_error_bar_matches_spread_when_the_7_to_the_A_term_dominates():
    """|A| = 5 from 400 snapshots: the reported error equals the run-to-run spread."""
    from qsense import sims

    rng = np.random.default_rng(0)
    rho = random_density(5, rng, rank=2)
    vals, ses = [], []
    for seed in range(150):
        est = ShadowPurity([(0, 1, 2, 3, 4)])
        est.update(sims.sample_shadows(rho, 400, seed=seed))
        p = est.purity()
        vals.append(p.values[0])
        ses.append(p.stderr[0])
    ratio = np.mean(ses) / np.std(vals)
    assert 0.8 < ratio < 1.25, ratio


def test_entropy_interval_and_nonpositive_purity():
    """S2's interval maps the purity's p +- se through -log2, clipped to [0, |A|] bits, and a
    purity estimate <= 0 gives a flagged interval instead of a bare NaN (issue 13 item 8)."""
    from qsense.estimators.result import Estimate, renyi2_from_purity

    pur = Estimate(np.array([0.5, -0.01, 0.01, 1.2, 0.05]), np.array([0.1, 0.05, 0.001, 0.1, 0.1]), 100, tuple("abcde"))
    e = renyi2_from_purity(pur, [2, 3, 3, 2, 3])
    assert e.values[0] == pytest.approx(1.0) and np.isnan(e.values[1])
    np.testing.assert_allclose(e.lower, [-np.log2(0.6), 3.0, 3.0, 0.0, -np.log2(0.15)])
    np.testing.assert_allclose(e.upper, [-np.log2(0.4), 3.0, 3.0, 0.0, 3.0])
    assert e.flags == ("", "purity<=0", "", "purity>1", "")
    d = e.as_dict()["estimates"]
    assert d["b"]["flag"] == "purity<=0" and d["b"]["upper"] == 3.0 and "flag" not in d["a"]
    # estimates without an interval keep the old dictionary exactly
    assert pur.as_dict()["estimates"]["a"] == {"value": 0.5, "stderr": 0.1}


def test_entropy_interval_coverage():
    """Over 300 seeds of a mixed 4-qubit state the entropy interval covers S2 like the purity's
    one-sigma bar covers the purity (the map is monotone), within a binomial tolerance."""
    import math

    from exact import random_density

    from qsense import sims

    rho = random_density(4, np.random.default_rng(12), rank=3)
    truth = -math.log2(np.trace(rho @ rho).real)
    seeds, hits, vals = 300, 0, []
    for s in range(seeds):
        est = ShadowPurity([(0, 1, 2, 3)])
        est.update(sims.sample_shadows(rho, 2000, seed=900 + s))
        e = est.entropy()
        assert 0.0 <= e.lower[0] <= e.upper[0] <= 4.0
        hits += bool(e.lower[0] <= truth <= e.upper[0])
        vals.append(e.values[0])
    nominal = math.erf(1 / math.sqrt(2))
    assert abs(hits / seeds - nominal) < 3 * math.sqrt(nominal * (1 - nominal) / seeds), hits / seeds
