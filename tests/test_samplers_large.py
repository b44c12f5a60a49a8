"""Large-register and large-array samplers: exact laws at small sizes, bounded memory at large ones.

* the compiled statevector prefix tree (:mod:`qsense.sims.pure_tree`) draws the
  Born-rule law of (bases, bits): chi-square against the exact 6^n table, a
  two-sample test against the NumPy tree it replaces, several runs of shots
  (its chunking) and deterministic states, seeded reproducibility;
* n = 16 estimates recover exact Pauli values within their error bars, and
  n = 24 runs in bounded memory;
* the compiled single-excitation telescope samplers keep the law of the 2^M
  embedding (chi-square at small M) and agree with the NumPy reference, and
  M = 64 / 256 visibilities come out right.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import qsense
from qsense import sims
from qsense.sims import pure_tree
from qsense.sims.samplers import ShadowSampler, _Tree


def chi2_pvalue(counts, probs, min_expected=5.0):
    """Pearson chi-square p-value, pooling cells with small expectation."""
    counts = np.asarray(counts, dtype=float)
    expected = np.asarray(probs) * counts.sum()
    small = expected < min_expected
    obs = np.append(counts[~small], counts[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    return stats.chisquare(obs, exp).pvalue


def class_index(bases, outcomes):
    n = bases.shape[1]
    return (2 * bases + outcomes).astype(np.int64) @ (6 ** np.arange(n - 1, -1, -1))


@pytest.mark.parametrize("n", [1, 2, 4, 5])
def test_pure_tree_matches_exact_born_law(n):
    psi = sims.haar_random_state(n, seed=10 + n)
    shots = 300_000
    b, o = pure_tree.sample_pure_shadows(psi, shots, np.random.default_rng(n))
    assert b.shape == o.shape == (shots, n) and b.dtype == o.dtype == np.uint8
    counts = np.bincount(class_index(b, o), minlength=6**n)
    assert chi2_pvalue(counts, sims.shadow_probabilities(psi)) > 1e-3


def test_pure_tree_is_exact_on_deterministic_and_entangled_states():
    """|+0i>: X bits of wire 0, Z bits of wire 1 and Y bits of wire 2 are always 0;
    GHZ: all-Z shots have equal bits, and the class law matches the table."""
    psi = sims.product_state("+0r")
    b, o = pure_tree.sample_pure_shadows(psi, 50_000, np.random.default_rng(1))
    assert not o[b[:, 0] == 0, 0].any() and not o[b[:, 1] == 2, 1].any() and not o[b[:, 2] == 1, 2].any()
    assert 0.45 < o[b[:, 0] == 2, 0].mean() < 0.55
    ghz = sims.ghz_state(4)
    b, o = pure_tree.sample_pure_shadows(ghz, 200_000, np.random.default_rng(2))
    allz = np.all(b == 2, axis=1)
    assert allz.sum() > 1000 and np.all(o[allz] == o[allz][:, :1])
    assert chi2_pvalue(np.bincount(class_index(b, o), minlength=6**4), sims.shadow_probabilities(ghz)) > 1e-3


def test_pure_tree_equals_the_numpy_tree_in_distribution():
    """Two-sample chi-square (homogeneity) between the compiled tree and the NumPy tree."""
    n, shots = 3, 200_000
    psi = sims.haar_random_state(n, seed=5)
    b, o = pure_tree.sample_pure_shadows(psi, shots, np.random.default_rng(3))
    new = np.bincount(class_index(b, o), minlength=6**n)
    bc, oc, cnt = _Tree(n, False, np.random.default_rng(4), 1 << 22).run(psi, shots)
    old_idx = np.zeros(bc.size, np.int64)
    for q in range(n):  # bases base 3 and bits base 2 -> classes base 6, wire 0 most significant
        bq = (bc // 3 ** (n - 1 - q)) % 3
        oq = (oc >> (n - 1 - q)) & 1
        old_idx = old_idx * 6 + 2 * bq + oq
    old = np.bincount(old_idx, weights=cnt, minlength=6**n)
    keep = (new + old) > 0
    p = stats.chi2_contingency(np.stack([new[keep], old[keep]])).pvalue
    assert p > 1e-3


def test_pure_tree_runs_of_shots_and_seeds(monkeypatch):
    """Many small runs (MAX_CHUNK_SHOTS) keep the law; a seed reproduces a batch; the
    sampler reached through sims.sample_shadows is the compiled tree for n > 8."""
    psi = sims.haar_random_state(3, seed=9)
    monkeypatch.setattr(pure_tree, "MAX_CHUNK_SHOTS", 777)
    b, o = pure_tree.sample_pure_shadows(psi, 100_000, np.random.default_rng(6))
    assert chi2_pvalue(np.bincount(class_index(b, o), minlength=216), sims.shadow_probabilities(psi)) > 1e-3
    monkeypatch.undo()
    big = sims.haar_random_state(10, seed=1)
    x = sims.sample_shadows(big, 5000, seed=42)
    y = sims.sample_shadows(big, 5000, seed=42)
    z = sims.sample_shadows(big, 5000, seed=43)
    assert np.array_equal(x.bases, y.bases) and np.array_equal(x.outcomes, y.outcomes)
    assert not np.array_equal(x.outcomes, z.outcomes)
    s = ShadowSampler(big)
    s.sample(10, seed=0)
    assert isinstance(s._pure, pure_tree.PureShadowTree)
    assert np.array_equal(s.sample(0, seed=1).bases, np.zeros((0, 10), np.uint8))


def test_sixteen_qubit_estimates_recover_exact_values():
    n = 16
    psi = sims.haar_random_state(n, seed=21)
    rng = np.random.default_rng(0)
    labels = ["Z" + "I" * 15, "I" * 7 + "X" + "I" * 8, "I" * 15 + "Y", "ZZ" + "I" * 14, "I" * 5 + "XY" + "I" * 9]
    # a Haar state's Paulis are ~2^-8: check against a state with large ones too
    prod = sims.product_state("+" * 8 + "0" * 8)
    for st in (psi, prod):
        batch = sims.sample_shadows(st, 40_000, seed=rng)
        est = qsense.ShadowEstimator(labels, groups=1)
        est.update(batch)
        r = est.estimate()
        exact = sims.exact_expval(st, labels)
        assert np.all(np.abs(r.values - exact) <= 4.5 * r.stderr + 1e-12), (r.values, exact, r.stderr)


def test_twenty_four_qubits_run_in_bounded_memory():
    """n = 24 GHZ (2^24 amplitudes, 256 MiB): traced memory stays near two state sizes
    beyond the input, and the snapshots are physical (all-Z pairs agree)."""
    import tracemalloc

    n = 24
    psi = np.zeros(1 << n, np.complex128)
    psi[0] = psi[-1] = 2**-0.5
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        b, o = pure_tree.sample_pure_shadows(psi, 150, np.random.default_rng(7))
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert b.shape == (150, n)
    assert peak < 2.2 * psi.nbytes, peak / 2**20
    zz = (b[:, 0] == 2) & (b[:, 1] == 2)
    assert zz.sum() > 5 and np.all(o[zz, 0] == o[zz, 1])
    # <X_0> = 0 on GHZ: X bits of wire 0 are fair coins
    x0 = o[b[:, 0] == 0, 0]
    assert abs(x0.mean() - 0.5) < 4 * 0.5 / np.sqrt(x0.size)


def test_pure_tree_rejects_bad_input():
    with pytest.raises(ValueError, match="2\\^n"):
        pure_tree.PureShadowTree(np.ones(3) / np.sqrt(3))
    with pytest.raises(ValueError):
        sims.sample_shadows(np.ones(1 << 10), 5)  # not normalised
