"""Memory decoherence models and Bell reweighting per Pauli letter (issue 13 item 2).

Exact checks: the reweighted estimator's expectation, summed over the exact Bell
outcome distribution of (D_tau(rho), rho) (``sims.bell_probabilities`` of
``sims.decohere``), equals tr(P rho)^2 and tr(rho_A^2) for the unital models.
Statistical checks: under simulated dephasing memory the corrected estimates are
unbiased and their one-sigma bars cover at the nominal rate over many seeds,
while the depolarizing reweighting over-corrects Z factors.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from exact import dm, expval, random_state, reduced

from qsense import BellBatch, BellEstimator, sims
from qsense.estimators.decoherence import T1T2, Dephasing, Depolarizing, decoherence_of, make_decoherence

N = 3
WORDS = ["ZZZ", "YZX", "XYI", "ZIZ"]
NOMINAL = math.erf(1 / math.sqrt(2))


@pytest.fixture(scope="module")
def rho() -> np.ndarray:
    return dm(random_state(N, np.random.default_rng(21)))


def _expected(est_factory, rho_wait: np.ndarray, rho: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact expectation of the estimator's Pauli values and purities (whole, wire 0)."""
    p = sims.bell_probabilities(rho_wait, rho)
    codes = np.array([[(c >> (2 * (N - 1 - q))) & 3 for q in range(N)] for c in range(4**N)], dtype=np.uint8)
    vals = np.zeros(len(WORDS))
    pur = np.zeros(2)
    for c in range(4**N):
        est = est_factory()
        est.update(BellBatch(codes[c : c + 1], wait=np.array([tau])))
        vals += p[c] * est.estimate().values
        pur += p[c] * np.array([est.purity().values[0], est.purity((0,)).values[0]])
    return vals, pur


def _truth(rho: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r0 = reduced(rho, (0,), N)
    return np.array([expval(rho, w) ** 2 for w in WORDS]), np.array([np.trace(rho @ rho).real, np.trace(r0 @ r0).real])


def test_models_factors_and_rates():
    assert np.allclose(Depolarizing(2.0).factors(1.0), np.exp(-0.5))
    assert np.allclose(Dephasing(2.0).factors(1.0), [np.exp(-0.5), np.exp(-0.5), 1.0])
    m = T1T2(1.0, 0.5)
    assert np.allclose(m.factors(0.25), [np.exp(-0.5), np.exp(-0.5), np.exp(-0.25)])
    assert not m.unital and Dephasing(1.0).unital
    assert Dephasing(2.0).pauli_rate(np.array([[3, 3, 3], [2, 3, 1]])).tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="T2 <= 2 T1"):
        T1T2(1.0, 3.0)
    assert make_decoherence({"model": "dephasing", "t2": 1e-3, "t1": None}) == Dephasing(1e-3)
    assert make_decoherence(None, t2=None) is None
    assert Depolarizing(1.0).wait_cost(3.0, 10.0) == pytest.approx(10.0 / 4.0)
    assert math.isinf(Depolarizing(1.0).wait_cost(3.0, 6.0))
    from qsense.sims.memory_sim import SimsCoherence

    assert decoherence_of(SimsCoherence(t2=1e-3, model="dephasing")) == Dephasing(1e-3)
    assert decoherence_of(SimsCoherence(t2=1e-3)) == Depolarizing(1e-3)
    assert decoherence_of(SimsCoherence(t2=1e-3, t1=1e-3, model="t1t2")) == T1T2(1e-3, 1e-3)


@pytest.mark.parametrize("model", ["depolarizing", "dephasing"])
def test_unital_reweighting_is_exactly_unbiased(rho, model):
    t2, tau = 1.0, 0.4
    rho_wait = sims.decohere(rho, tau, t2=t2, model=model)
    vals, pur = _expected(lambda: BellEstimator(WORDS, t2=t2, purity_subsystems=[(0,)], decoherence=model), rho_wait, rho, tau)
    truth, ptruth = _truth(rho)
    np.testing.assert_allclose(vals, truth, atol=1e-12)
    np.testing.assert_allclose(pur, ptruth, atol=1e-12)


def test_depolarizing_reweighting_over_corrects_dephased_memory(rho):
    t2, tau = 1.0, 0.4
    rho_wait = sims.decohere(rho, tau, t2=t2, model="dephasing")
    vals, pur = _expected(lambda: BellEstimator(WORDS, t2=t2, purity_subsystems=[(0,)]), rho_wait, rho, tau)
    truth, _ = _truth(rho)
    # Z letters do not decay under dephasing, so e^{tau/T2} per Z letter is surplus
    nz = np.array([w.count("Z") for w in WORDS])
    np.testing.assert_allclose(vals, truth * np.exp(nz * tau / t2), atol=1e-12)


def test_t1t2_reweighting_divides_the_multiplicative_part(rho):
    """T1T2 is not unital: the expectation is tr(P D(rho)) tr(P rho) / prod f_L, exact for
    X/Y-only words; words with Z keep the relaxation term (documented bias)."""
    t1, t2, tau = 1.0, 0.8, 0.3
    rho_wait = sims.decohere(rho, tau, t1=t1, t2=t2, model="t1t2")
    with pytest.warns(RuntimeWarning, match="not unital"):
        BellEstimator(WORDS, decoherence=T1T2(t1, t2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        vals, _ = _expected(lambda: BellEstimator(WORDS, purity_subsystems=[(0,)], decoherence=T1T2(t1, t2)), rho_wait, rho, tau)
    rate = T1T2(t1, t2).pauli_rate(np.array([["IXYZ".index(c) for c in w] for w in WORDS]))
    predicted = np.array([expval(rho_wait, w) * expval(rho, w) for w in WORDS]) * np.exp(tau * rate)
    np.testing.assert_allclose(vals, predicted, atol=1e-12)
    truth, _ = _truth(rho)
    assert vals[WORDS.index("XYI")] == pytest.approx(truth[WORDS.index("XYI")], abs=1e-12)


def _sampled(rho: np.ndarray, model: str, seeds: int, shots: int, decoherence: str) -> tuple[np.ndarray, np.ndarray]:
    t2 = 1.0
    taus = np.array([0.1, 0.3, 0.5])  # a few wait values stand in for the memory's wait distribution
    waited = [sims.decohere(rho, tau, t2=t2, model=model) for tau in taus]
    out, err = [], []
    for s in range(seeds):
        est = BellEstimator(WORDS, t2=t2, purity_subsystems=[(0,)], decoherence=decoherence)
        for j, (tau, rw) in enumerate(zip(taus, waited)):
            est.update(sims.sample_bell_pair(rw, rho, shots, seed=(s, j), wait=tau))
        r, p, p0 = est.estimate(), est.purity(), est.purity((0,))
        out.append(np.r_[r.values, p.values, p0.values])
        err.append(np.r_[r.stderr, p.stderr, p0.stderr])
    return np.array(out), np.array(err)


def test_dephasing_memory_statistics(rho):
    seeds = 200
    out, err = _sampled(rho, "dephasing", seeds, 1000, "dephasing")
    truth = np.concatenate(_truth(rho))
    cover = (np.abs(out - truth) <= err).mean(axis=0)
    tol = 3 * math.sqrt(NOMINAL * (1 - NOMINAL) / seeds)
    assert np.all(np.abs(cover - NOMINAL) < tol), cover
    z = (out.mean(axis=0) - truth) / (out.std(axis=0) / math.sqrt(seeds))
    assert np.all(np.abs(z) < 4), z


def test_t1t2_memory_statistics_for_xy_words(rho):
    """Under T1T2 memory the X/Y-only word and the bias-free part are covered as well."""
    seeds = 200
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        t1, t2, tau = 1.0, 0.8, 0.3
        rw = sims.decohere(rho, tau, t1=t1, t2=t2, model="t1t2")
        vals = []
        errs = []
        for s in range(seeds):
            est = BellEstimator(["XYI", "YXY"], decoherence=T1T2(t1, t2))
            est.update(sims.sample_bell_pair(rw, rho, 3000, seed=(99, s), wait=tau))
            r = est.estimate()
            vals.append(r.values)
            errs.append(r.stderr)
    vals, errs = np.array(vals), np.array(errs)
    truth = np.array([expval(rho, w) ** 2 for w in ["XYI", "YXY"]])
    cover = (np.abs(vals - truth) <= errs).mean(axis=0)
    assert np.all(np.abs(cover - NOMINAL) < 3 * math.sqrt(NOMINAL * (1 - NOMINAL) / seeds)), cover
    z = (vals.mean(axis=0) - truth) / (vals.std(axis=0) / math.sqrt(seeds))
    assert np.all(np.abs(z) < 4), z


def test_config_decoherence_key():
    import tomllib

    from qsense.streaming.config import ConfigError, parse_config

    base = "[[inputs.zmq]]\nendpoint='tcp://127.0.0.1:5555'\n[[estimators]]\nname='b'\ntype='bell'\nobservables=['ZZ']\nwires=2\n"
    cfg = parse_config(tomllib.loads(base + "t2 = 0.001\ndecoherence = 'dephasing'\n")).estimators[0]
    assert cfg.decoherence == "dephasing" and cfg.fingerprint()["decoherence"] == "dephasing"
    # the default leaves the fingerprint of older checkpoints unchanged
    assert "decoherence" not in parse_config(tomllib.loads(base + "t2 = 0.001\n")).estimators[0].fingerprint()
    with pytest.raises(ConfigError, match="needs t2"):
        parse_config(tomllib.loads(base + "decoherence = 'dephasing'\n"))
    with pytest.raises(ConfigError, match="expected one of"):
        parse_config(tomllib.loads(base + "t2 = 1.0\ndecoherence = 't1'\n"))


def test_checkpoint_keeps_the_model_and_merge_checks_it(rho):
    est = BellEstimator(WORDS, t2=1.0, decoherence="dephasing", purity_subsystems=[(0,)])
    est.update(sims.sample_bell_pair(sims.decohere(rho, 0.3, t2=1.0, model="dephasing"), rho, 500, seed=1, wait=0.3))
    back = BellEstimator.from_bytes(est.to_bytes())
    assert back.decoherence == Dephasing(1.0)
    np.testing.assert_array_equal(back.estimate().values, est.estimate().values)
    with pytest.raises(ValueError, match="different configuration"):
        BellEstimator(WORDS, t2=1.0, purity_subsystems=[(0,)]).merge(est)
    # a depolarizing checkpoint (the format before the model was stored) still reads as depolarizing
    old = BellEstimator(WORDS, t2=1.0)
    assert BellEstimator.from_bytes(old.to_bytes()).decoherence == Depolarizing(1.0)


def test_target_set_reweights_with_the_memory_model():
    import numpy as np

    from qsense import BellBatch
    from qsense.acquisition.targets import PauliSquare, TargetSet
    from qsense.estimators.decoherence import Dephasing, check_decoherence

    model = Dephasing(2e-3)
    ts = TargetSet([PauliSquare("X0 X1"), PauliSquare("Z0 Z1")], decoherence=model)
    assert ts.t2 == 2e-3 and ts.decoherence == model
    ts.update(BellBatch(np.zeros((20, 2), dtype=np.uint8), wait=np.full(20, 1e-3)))
    assert ts._bell.decoherence == model  # noqa: SLF001 -- the Bell estimates follow the memory
    assert check_decoherence(model, ts._bell)  # noqa: SLF001 -- no mismatch warning


def test_daemon_bell_estimator_follows_the_configured_model():
    from qsense.streaming.config import parse_config
    from qsense.streaming.daemon import make_estimator

    cfg = parse_config({"estimators": [{"name": "b", "type": "bell", "observables": ["XX"], "t2": 1e-3,
                                        "decoherence": "dephasing"}]})
    est = make_estimator(cfg.estimators[0])
    assert type(est.decoherence).__name__ == "Dephasing" and est.decoherence.t2 == 1e-3
