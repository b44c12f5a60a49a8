"""The two-copy advantage example: its fast samplers against the generic sims
samplers, its statistics against qsense's estimators, its theory, and a small run."""

from __future__ import annotations

import importlib.util
import itertools
import math
import pathlib

import numpy as np
import pytest

from qsense import BellBatch, BellEstimator, ShadowBatch, shadow_expval, sims

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load(path: pathlib.Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


adv = _load(ROOT / "examples" / "two_copy_advantage.py", "two_copy_advantage")


def _hist(codes: np.ndarray, base: int) -> np.ndarray:
    n = codes.shape[1]
    idx = codes.astype(np.int64) @ (base ** np.arange(n - 1, -1, -1))
    return np.bincount(idx, minlength=base**n) / len(codes)


def _zscores(freq, p, T):
    return np.abs(freq - p) / np.sqrt(p * (1 - p) / T + 1e-12)


@pytest.mark.parametrize("P", ["X", "ZY", "YIX", "XZZ"])
@pytest.mark.parametrize("alpha", [0.9, -0.6])
def test_fast_samplers_match_generic_sims_samplers(P, alpha):
    """Exact distributions: closed form = sims probabilities; samples from the
    fast samplers and from the sims samplers agree with them."""
    rng = np.random.default_rng(1)
    rho = adv.pauli_state(P, alpha)
    n, T = len(P), 120_000
    p_bell = sims.bell_probabilities(rho)
    p_shadow = sims.shadow_probabilities(rho)
    fast_b = _hist(adv.sample_pauli_state_bell(P, alpha, T, rng), 4)
    gen_b = _hist(sims.sample_bell(rho, T, seed=2).outcomes, 4)
    b, o = adv.sample_pauli_state_shadows(P, alpha, T, rng)
    fast_s = _hist(2 * b + o, 6)
    gs = sims.sample_shadows(rho, T, seed=3)
    gen_s = _hist(2 * gs.bases + gs.outcomes, 6)
    for freq, p in ((fast_b, p_bell), (gen_b, p_bell), (fast_s, p_shadow), (gen_s, p_shadow)):
        assert _zscores(freq, p, T).max() < 5.0
    # the closed forms of the module docstring
    lam = np.array([adv.bell_values(np.array(c, dtype=np.uint8)[None, :], P)[0] for c in itertools.product(range(4), repeat=n)])
    np.testing.assert_allclose(p_bell, (1 + alpha**2 * lam) / 4**n, atol=1e-12)


def test_statistics_equal_qsense_estimators():
    rng = np.random.default_rng(2)
    P, Q = "XZY", "ZZX"
    b, o = adv.sample_pauli_state_shadows(P, 0.8, 5000, rng)
    batch = ShadowBatch(b, o)
    mine = [adv.shadow_values(b, o, X).mean() for X in (P, Q)]
    np.testing.assert_allclose(mine, shadow_expval(batch, [P, Q], k=1), atol=1e-12)
    codes = adv.sample_pauli_state_bell(P, 0.8, 5000, rng)
    est = BellEstimator([P, Q])
    est.update(BellBatch(codes))
    np.testing.assert_allclose([adv.bell_values(codes, X).mean() for X in (P, Q)], est.estimate().values, atol=1e-12)


def test_sufficient_statistic_sampler_matches_explicit_sampling():
    """Counts of (P+, P-, Q+, Q-) from the multinomial shortcut have the same law as
    from explicit snapshots: compare means and the resulting accuracies."""
    rng = np.random.default_rng(3)
    n, alpha, N, trials = 3, 0.9, 120, 3000
    P, Q = adv.random_full_weight_paulis(n, rng)
    b, o = adv.sample_pauli_state_shadows(P, alpha, N * trials, rng)
    xp = adv.shadow_values(b, o, P).reshape(trials, N) / 3**n
    xq = adv.shadow_values(b, o, Q).reshape(trials, N) / 3**n
    explicit = np.stack([(xp > 0).sum(1), (xp < 0).sum(1), (xq > 0).sum(1), (xq < 0).sum(1)], axis=1)
    stat = adv.shadow_match_counts(n, alpha, N, trials, rng)
    se = np.sqrt(explicit.var(axis=0) / trials * 2)
    assert np.all(np.abs(explicit.mean(0) - stat.mean(0)) < 5 * se)
    a1, m1 = adv.accuracy_shadow(n, alpha, N, trials, rng, explicit=True)
    a2, m2 = adv.accuracy_shadow(n, alpha, N, trials, rng, explicit=False)
    assert (m1, m2) == ("explicit", "statistic")
    assert abs(a1 - a2) < 5 * math.sqrt(0.25 / trials * 2)
    assert abs(a2 - adv.theory_shadow_accuracy(alpha, n, N)) < 0.04  # Poisson limit, 3^-3 already small


def test_theory_and_reference_check():
    """docs/physics.md §2: Bell accuracy 1/2 + α²/4 with one pair (≈ 0.75 for α → 1),
    ≈ 1 with 25 pairs for n = 4..10; single copies fall towards chance."""
    alpha = 0.95
    assert adv.theory_bell_accuracy(alpha, 1) == pytest.approx(0.5 + alpha**2 / 4)
    assert adv.theory_bell_accuracy(alpha, 25) > 0.999
    rng = np.random.default_rng(4)
    rows = adv.reference_check(alpha, 1500, rng, ns=(4, 7, 10), engine="arith")
    for r in rows:
        assert r["bell_1"] == pytest.approx(0.5 + alpha**2 / 4, abs=0.04)
        assert r["bell_25"] > 0.99
        # informed single copies (P's eigenbasis): constant in n, like Bell (issue 13 item 10)
        assert r["informed_8"] == pytest.approx(adv.theory_informed_accuracy(alpha, 8), abs=0.03)
    assert rows[0]["shadow_50"] > rows[-1]["shadow_50"] - 0.03
    assert abs(rows[-1]["shadow_50"] - 0.5) < 0.05  # n = 10: chance
    # theory copies: constant for Bell, mu* 3^n for shadows
    s4, b4 = adv.theory_copies(4, 0.9, 0.9)
    s8, b8 = adv.theory_copies(8, 0.9, 0.9)
    assert b4 == b8 and s8 / s4 == pytest.approx(3**4)


def test_decisions_from_qsense_estimators_equal_the_fast_arithmetic():
    """Issue 13 item 10: the example decides through BellEstimator / ShadowEstimator; on the same records
    (same seed) the vectorised arithmetic used for long scans gives exactly the same accuracies."""
    for fn, args in (
        (adv.accuracy_bell, (6, 0.9, 3, 120)),
        (lambda *a, **k: adv.accuracy_shadow(*a, explicit=True, **k)[0], (3, 0.9, 40, 120)),
        (adv.accuracy_informed, (5, 0.9, 8, 120)),
    ):
        a = fn(*args, np.random.default_rng(11), engine="arith")
        b = fn(*args, np.random.default_rng(11), engine="estimator")
        assert a == b


def test_informed_single_copy_baseline():
    """With P and Q announced, 8 single copies in P's eigenbasis reach 0.954 whatever n (exact theory)."""
    assert adv.theory_informed_accuracy(0.9, 8) == pytest.approx(0.9538, abs=1e-4)
    acc = adv.accuracy_informed(12, 0.9, 8, 4000, np.random.default_rng(12), engine="arith")
    assert acc == pytest.approx(0.9538, abs=4 * math.sqrt(0.954 * 0.046 / 4000))


def test_measured_copies_follow_theory():
    rng = np.random.default_rng(5)
    r = adv.measured_copies(5, 0.9, 0.9, 400, rng)
    th_s, th_b = adv.theory_copies(5, 0.9, 0.9)
    assert r["shadow_copies"] == pytest.approx(th_s, rel=0.35)
    assert r["bell_copies"] == pytest.approx(th_b, rel=0.35)


def test_example_runs_small(tmp_path, capsys):
    out = tmp_path / "adv.png"
    assert adv.main(["--nmax", "3", "--trials", "60", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "shadow theory" in text and "reference check" in text and out.stat().st_size > 1000
