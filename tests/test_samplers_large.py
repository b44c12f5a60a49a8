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


# ----------------------------------------------------------------------------- telescope samplers
def test_single_excitation_kernel_with_given_bases_matches_the_embedding():
    """Fixed bases (X, Y, Z) for every shot: the outcome law is 27 p(class) of the 2^3 embedding."""
    from qsense.sims.telescope import single_excitation_to_qubits
    from qsense.sims.telescope.samplers import shadows_from_amplitudes

    rng = np.random.default_rng(3)
    v = rng.normal(size=4) + 1j * rng.normal(size=4)
    v /= np.linalg.norm(v)
    T = 120_000
    bases = np.tile(np.array([0, 1, 2], np.uint8), (T, 1))
    b, o = shadows_from_amplitudes(np.repeat(v[None], T, 0), rng, bases)
    assert np.array_equal(b, bases)
    probs = sims.shadow_probabilities(single_excitation_to_qubits(v)).reshape((6,) * 3)
    cond = np.array([probs[0 + i, 2 + j, 4 + k] for i in (0, 1) for j in (0, 1) for k in (0, 1)]) * 27
    counts = np.bincount(o.astype(np.int64) @ np.array([4, 2, 1]), minlength=8)
    assert abs(cond.sum() - 1) < 1e-12
    assert chi2_pvalue(counts, cond) > 1e-3


def test_single_excitation_kernels_at_256_and_3000_telescopes():
    """A photon shared by telescopes 0 and 1 of 256: <X0 X1> = 2 Re(b0 conj b1) and
    <Y0 X1 - X0 Y1>/2 sign convention hold within error bars, every other telescope
    reads Z = +1; at 3000 telescopes (coefficients renormalised along the way) a Z
    readout finds exactly one photon and X readouts are fair coins."""
    from qsense.sims.telescope.samplers import bell_from_amplitudes, shadows_from_amplitudes

    rng = np.random.default_rng(8)
    M, T = 256, 40_000
    v = np.zeros(M + 1, complex)
    v[1], v[2] = 0.6, 0.8 * np.exp(0.7j)
    amps = np.repeat(v[None], T, 0)
    b, o = shadows_from_amplitudes(amps, rng)
    s = 1.0 - 2.0 * o
    rest = b[:, 2:] == 2
    assert np.all(o[:, 2:][rest] == 0)
    xx = (b[:, 0] == 0) & (b[:, 1] == 0)
    est = 9.0 * np.where(xx, s[:, 0] * s[:, 1], 0.0)
    truth = 2 * (v[1] * np.conj(v[2])).real
    assert abs(est.mean() - truth) < 4.5 * est.std() / np.sqrt(T)
    codes = bell_from_amplitudes(amps[:10_000], amps[10_000:20_000], rng)
    # |00> = (Phi+ + Phi-)/sqrt2 at every empty site: never a Psi code there, and fair Phi+-
    assert np.all((codes[:, 2:] == 0) | (codes[:, 2:] == 2))
    assert abs((codes[:, 2:] == 2).mean() - 0.5) < 0.01
    assert np.all(((codes == 1) | (codes == 3)).sum(axis=1) <= 2)
    big = np.zeros((40, 3001), complex)
    big[:, 1:] = 1 / np.sqrt(3000)
    _, z = shadows_from_amplitudes(big, rng, np.full((40, 3000), 2, np.uint8))
    assert np.all(z.sum(axis=1) == 1)
    _, x = shadows_from_amplitudes(big, rng, np.zeros((40, 3000), np.uint8))
    assert abs(x.mean() - 0.5) < 0.02
    with pytest.raises(ValueError, match="zero amplitude"):
        shadows_from_amplitudes(np.zeros((3, 5), complex), rng)
