"""Statistical regression for the online median of means (issue 13 item 1).

State |0...0>, n = 6, ``ShadowEstimator([...], groups=10)``: the weight-6 and
weight-5 Z strings have tr(P rho) = 1 exactly.  Before the groups were chosen
per term (docs/physics.md §6) the weight-6 estimate was 0 in 94% of seeds at
T = 4,000 and its one-sigma bar covered 1 in 2-16% of seeds; now every (weight,
T) must cover at the nominal 68.3% within a binomial tolerance, with a bias
small against the error bar.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from qsense import ShadowEstimator, sims

N_QUBITS = 6
SEEDS = 200
WORDS = ["ZZZZZZ", "ZZZZZI"]
#: 1-sigma coverage of a normal error bar
NOMINAL = math.erf(1 / math.sqrt(2))


def _runs(T: int) -> tuple[np.ndarray, np.ndarray]:
    psi = np.zeros(2**N_QUBITS)
    psi[0] = 1.0  # exact: tr(Z^{(x)k} rho) = 1 for every k
    vals, ses = [], []
    for s in range(SEEDS):
        est = ShadowEstimator(WORDS, groups=10)
        est.update(sims.sample_shadows(psi, T, seed=7000 + s))
        r = est.estimate()
        vals.append(r.values)
        ses.append(r.stderr)
    return np.array(vals), np.array(ses)


@pytest.mark.parametrize("T", [4000, 20000, 100000])
def test_coverage_and_bias_at_weight_6_and_5(T: int) -> None:
    vals, ses = _runs(T)
    truth = 1.0
    cover = (np.abs(vals - truth) <= ses).mean(axis=0)
    # 3 binomial sigmas of a 200-seed coverage (+-0.099)
    tol = 3 * math.sqrt(NOMINAL * (1 - NOMINAL) / SEEDS)
    assert np.all(np.abs(cover - NOMINAL) < tol), (T, cover)
    bias = vals.mean(axis=0) - truth
    # allowed: a quarter of the error bar, plus the Monte Carlo noise of the mean (3 sigma)
    allowed = 0.25 * ses.mean(axis=0) + 3 * vals.std(axis=0) / math.sqrt(SEEDS)
    assert np.all(np.abs(bias) < allowed), (T, bias, allowed)
    # the error bar describes the spread across seeds (within 25%)
    np.testing.assert_allclose(ses.mean(axis=0), vals.std(axis=0), rtol=0.25)
