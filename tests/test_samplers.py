"""Exactness and statistics of the sims samplers.

The exact distributions are checked against independent brute-force
constructions (explicit projectors, an explicit two-copy circuit); sampled
records are checked against them with chi-square tests at fixed seeds; and the
qsense estimators recover exact values computed from the density matrix.
"""

from __future__ import annotations

import itertools
import math
from functools import reduce

import numpy as np
import pytest
from scipy import stats

import qsense
from qsense import sims
from qsense.sims.samplers import ShadowSampler

I2 = np.eye(2, dtype=complex)
PAULI = {
    "I": I2,
    "X": np.array([[0, 1], [1, 0]], dtype=complex),
    "Y": np.array([[0, -1j], [1j, 0]], dtype=complex),
    "Z": np.array([[1, 0], [0, -1]], dtype=complex),
}


def kron(*ms):
    return reduce(np.kron, ms)


def exact_expval(rho, label):
    return float(np.trace(kron(*[PAULI[c] for c in label]) @ rho).real)


def brute_shadow_probs(rho, n):
    """p(bases, bits) = 3^-n tr(rho (x)_q (I + (-1)^bit sigma_basis)/2), class index
    base-6 digits 2*basis + bit, wire 0 most significant."""
    sig = [PAULI["X"], PAULI["Y"], PAULI["Z"]]
    proj = [(I2 + (1 - 2 * o) * sig[b]) / 2 for b in range(3) for o in range(2)]  # index 2b+o
    out = np.empty(6**n)
    for k, digits in enumerate(itertools.product(range(6), repeat=n)):
        out[k] = np.trace(rho @ kron(*[proj[d] for d in digits])).real / 3**n
    return out


def brute_bell_probs(rho_a, rho_b, n):
    """Explicit 2n-qubit circuit on wires (A_0..A_{n-1}, B_0..B_{n-1}):
    CNOT(A_i -> B_i), H(A_i), computational readout -> codes 2a + b."""
    N = 2 * n
    rho = np.kron(rho_a, rho_b)

    def single(op, w):
        return kron(*[op if q == w else I2 for q in range(N)])

    def cnot(c, t):
        P0 = np.diag([1, 0]).astype(complex)
        P1 = np.diag([0, 1]).astype(complex)
        return kron(*[P0 if q == c else I2 for q in range(N)]) + kron(
            *[P1 if q == c else (PAULI["X"] if q == t else I2) for q in range(N)]
        )

    H = np.array([[1, 1], [1, -1]], dtype=complex) / math.sqrt(2)
    U = np.eye(2**N, dtype=complex)
    for i in range(n):
        U = single(H, i) @ cnot(i, n + i) @ U
    p_bits = np.real(np.diag(U @ rho @ U.conj().T))
    out = np.zeros(4**n)
    for idx, p in enumerate(p_bits):
        bits = [(idx >> (N - 1 - q)) & 1 for q in range(N)]
        code = 0
        for i in range(n):
            code = code * 4 + 2 * bits[i] + bits[n + i]
        out[code] += p
    return out


def chi2_pvalue(counts, probs, min_expected=5.0):
    """Pearson chi-square p-value, pooling cells with small expectation."""
    counts = np.asarray(counts, dtype=float)
    expected = np.asarray(probs) * counts.sum()
    small = expected < min_expected
    obs = np.append(counts[~small], counts[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    assert abs(obs.sum() - exp.sum()) < 1e-6 * obs.sum() + 1e-9
    return stats.chisquare(obs, exp).pvalue


def shadow_class_index(batch):
    d = (2 * batch.bases + batch.outcomes).astype(np.int64)
    return d @ (6 ** np.arange(batch.n - 1, -1, -1))


def bell_class_index(batch):
    return batch.outcomes.astype(np.int64) @ (4 ** np.arange(batch.n - 1, -1, -1))


@pytest.fixture(scope="module")
def states():
    return {
        "ghz3": sims.ghz_state(3),
        "w3": sims.w_state(3),
        "haar3": sims.haar_random_state(3, seed=11),
        "mixed3": sims.random_mixed_state(3, 0.55, seed=12),
        "circ2": sims.random_circuit_state(2, 3, seed=13),
    }


# ------------------------------------------------------------------ exact tables
@pytest.mark.parametrize("name", ["ghz3", "w3", "haar3", "mixed3", "circ2"])
def test_shadow_table_matches_projectors(states, name):
    st = states[name]
    rho = sims.to_density_matrix(st)
    n = int(math.log2(rho.shape[0]))
    np.testing.assert_allclose(sims.shadow_probabilities(st), brute_shadow_probs(rho, n), atol=1e-14)
    # density-matrix path equals statevector path
    np.testing.assert_allclose(sims.shadow_probabilities(rho), sims.shadow_probabilities(st), atol=1e-14)


@pytest.mark.parametrize("name", ["ghz3", "haar3", "mixed3", "circ2"])
def test_bell_table_matches_circuit(states, name):
    st = states[name]
    rho = sims.to_density_matrix(st)
    n = int(math.log2(rho.shape[0]))
    np.testing.assert_allclose(sims.bell_probabilities(st), brute_bell_probs(rho, rho, n), atol=1e-13)
    other = sims.random_mixed_state(n, 0.7, seed=5)
    np.testing.assert_allclose(sims.bell_probabilities(st, other), brute_bell_probs(rho, other, n), atol=1e-13)


def test_bell_codes_of_bell_states():
    """Code 0 = Phi+, 1 = Psi+, 2 = Phi-, 3 = Psi- (docs/estimators.md)."""
    s = 1 / math.sqrt(2)
    bell = [np.array([s, 0, 0, s]), np.array([0, s, s, 0]), np.array([s, 0, 0, -s]), np.array([0, s, -s, 0])]
    # two copies of the maximally mixed qubit give uniform codes
    np.testing.assert_allclose(sims.bell_probabilities(np.eye(2) / 2), 0.25, atol=1e-15)
    # a pure product |0>|0> across the copies is Phi+ or Phi- with 1/2 each
    np.testing.assert_allclose(sims.bell_probabilities(np.array([1, 0])), [0.5, 0, 0.5, 0], atol=1e-15)
    # |0> on copy A and |1> on copy B: Psi+ or Psi-
    np.testing.assert_allclose(sims.bell_probabilities(np.array([1, 0]), np.array([0, 1])), [0, 0.5, 0, 0.5], atol=1e-15)
    # purity of the two-copy state: P(no singlet) - P(singlet) = tr(rho^2)
    rho = sims.random_mixed_state(1, 0.8, seed=3)
    p = sims.bell_probabilities(rho)
    assert abs((1 - 2 * p[3]) - 0.8) < 1e-12
    assert len(bell) == 4


def test_pauli_vector_order(states):
    rho = sims.to_density_matrix(states["mixed3"])
    v = sims.pauli_vector(rho)
    labels = qsense.pauli_square_labels(3)
    np.testing.assert_allclose(v, [exact_expval(rho, lab) for lab in labels], atol=1e-14)


# ------------------------------------------------------------------ sampled distributions
@pytest.mark.parametrize("method", ["table", "tree"])
@pytest.mark.parametrize("name,dense", [("haar3", False), ("mixed3", True), ("w3", False), ("ghz3", True)])
def test_shadow_samples_chi_square(states, method, name, dense):
    st = states[name]
    if dense:
        st = sims.to_density_matrix(st)
    shots = 120_000
    batch = ShadowSampler(st, method=method).sample(shots, seed=2024)
    assert batch.bases.shape == (shots, 3) and batch.bases.dtype == np.uint8
    counts = np.bincount(shadow_class_index(batch), minlength=6**3)
    p = chi2_pvalue(counts, sims.shadow_probabilities(st))
    assert p > 1e-3, p
    # bases are uniform and independent of the state
    assert chi2_pvalue(np.bincount(batch.bases.astype(np.int64) @ [9, 3, 1], minlength=27), np.full(27, 1 / 27)) > 1e-3


@pytest.mark.parametrize("name,dense", [("haar3", False), ("mixed3", True), ("ghz3", False)])
def test_bell_samples_chi_square(states, name, dense):
    st = states[name]
    if dense:
        st = sims.to_density_matrix(st)
    batch = sims.sample_bell(st, 100_000, seed=99)
    assert batch.outcomes.shape == (100_000, 3) and batch.outcomes.max() <= 3
    counts = np.bincount(bell_class_index(batch), minlength=64)
    assert chi2_pvalue(counts, sims.bell_probabilities(st)) > 1e-3


def test_bell_pair_chi_square(states):
    a = sims.decohere(states["haar3"], 0.4, t2=1.0)
    b = states["haar3"]
    batch = sims.sample_bell_pair(a, b, 80_000, seed=5, wait=0.4, source="mem", seq=7)
    assert batch.source == "mem" and batch.seq == 7 and np.all(batch.wait == 0.4)
    counts = np.bincount(bell_class_index(batch), minlength=64)
    assert chi2_pvalue(counts, sims.bell_probabilities(a, b)) > 1e-3


def test_categorical_sampler_both_methods():
    """Multinomial-and-shuffle (K <= T/4) and sorted-search (K > T/4) are both exact."""
    from qsense.sims.samplers import _Categorical

    rng = np.random.default_rng(0)
    p = rng.random(1000) ** 3
    cat = _Categorical(p)
    many = cat.sample(200_000, rng)  # multinomial path
    few = np.concatenate([cat.sample(3000, rng) for _ in range(60)])  # search path
    for idx in (many, few):
        assert idx.dtype == np.int32
        assert chi2_pvalue(np.bincount(idx, minlength=1000), p / p.sum()) > 1e-3
    # i.i.d. order: no serial correlation between consecutive draws
    for idx in (many, few):
        x = idx[:-1].astype(float)
        y = idx[1:].astype(float)
        assert abs(np.corrcoef(x, y)[0, 1]) < 5 / math.sqrt(idx.size)


def test_threaded_draws_are_exact_and_reproducible():
    from qsense.sims import samplers

    st = sims.random_mixed_state(3, 0.6, seed=14)
    shots = samplers.PARALLEL_MIN_SHOTS + 1000
    previous = samplers.set_threads(2)
    try:
        a = sims.sample_shadows(st, shots, seed=3)
        b = sims.sample_shadows(st, shots, seed=3)
        bell = sims.sample_bell(st, shots, seed=4)
    finally:
        samplers.set_threads(previous)
    assert np.array_equal(a.bases, b.bases) and np.array_equal(a.outcomes, b.outcomes)
    counts = np.bincount(shadow_class_index(a), minlength=216)
    assert chi2_pvalue(counts, sims.shadow_probabilities(st)) > 1e-3
    assert chi2_pvalue(np.bincount(bell_class_index(bell), minlength=64), sims.bell_probabilities(st)) > 1e-3
    with pytest.raises(ValueError):
        samplers.set_threads(0)


def test_tree_with_tiny_budget_is_exact():
    """Chunked depth-first processing (budget far below the state size) keeps the law."""
    st = sims.haar_random_state(4, seed=8)
    batch = ShadowSampler(st, method="tree", budget=8).sample(60_000, seed=1)
    counts = np.bincount(shadow_class_index(batch), minlength=6**4)
    assert chi2_pvalue(counts, sims.shadow_probabilities(st)) > 1e-3
    rho = sims.random_mixed_state(3, 0.5, seed=4)
    batch = ShadowSampler(rho, method="tree", budget=4).sample(40_000, seed=2)
    counts = np.bincount(shadow_class_index(batch), minlength=6**3)
    assert chi2_pvalue(counts, sims.shadow_probabilities(rho)) > 1e-3


# ------------------------------------------------------------------ estimators recover exact values
def _zscore_ok(est, exact, se, z=4.5):
    est, exact, se = map(np.asarray, (est, exact, se))
    assert np.all(np.abs(est - exact) <= z * se + 1e-12), (est, exact, se)


@pytest.mark.parametrize("name", ["ghz4", "w4", "haar4", "mixed4"])
def test_estimators_recover_exact_values(name):
    st = {
        "ghz4": sims.ghz_state(4),
        "w4": sims.w_state(4),
        "haar4": sims.haar_random_state(4, seed=21),
        "mixed4": sims.random_mixed_state(4, 0.4, seed=22),
    }[name]
    rho = sims.to_density_matrix(st)
    labels = ["ZZII", "XXXX", "YYXX", "XIII", "IZIZ", "XYZI", "ZIII"]
    exact = np.array([exact_expval(rho, lab) for lab in labels])

    shots = 200_000
    batch = sims.sample_shadows(st, shots, seed=3)
    est = qsense.ShadowEstimator(labels)
    est.update(batch)
    r = est.estimate()
    _zscore_ok(r.values, exact, r.stderr)
    # median of means agrees with PennyLane's ClassicalShadow on the same data
    np.testing.assert_allclose(qsense.shadow_expval(batch, labels, k=1), r.values, atol=1e-12)

    pur = qsense.ShadowPurity([[0], [0, 1], [1, 2, 3]])
    pur.update(batch[:50_000])
    pe = pur.purity()
    ex_p = []
    for sub in ([0], [0, 1], [1, 2, 3]):
        keep = [q for q in range(4) if q in sub]
        r4 = rho.reshape([2] * 8)
        trace_out = [q for q in range(4) if q not in sub]
        # partial trace by summing the traced-out row/col indices pairwise
        t = r4
        for q in sorted(trace_out, reverse=True):
            t = np.trace(t, axis1=q, axis2=q + t.ndim // 2)
        d = 2 ** len(keep)
        red = t.reshape(d, d)
        ex_p.append(float(np.trace(red @ red).real))
    _zscore_ok(pe.values, ex_p, pe.stderr)

    bb = sims.sample_bell(st, 100_000, seed=4)
    be = qsense.BellEstimator(labels, purity_subsystems=[[0, 1]])
    be.update(bb)
    br = be.estimate()
    _zscore_ok(br.values, exact**2, br.stderr)
    bp = be.purity()
    _zscore_ok(bp.values, [float(np.trace(rho @ rho).real)], bp.stderr)
    _zscore_ok(be.purity([0, 1]).values, [ex_p[1]], be.purity([0, 1]).stderr)


def test_all_pauli_squares_from_bell_samples():
    rho = sims.random_mixed_state(3, 0.7, seed=31)
    bb = sims.sample_bell(rho, 200_000, seed=6)
    got = qsense.all_pauli_squares(bb)
    want = sims.pauli_vector(rho) ** 2
    # per-shot variance <= 1: 5 sigma of the mean over 200k shots
    assert np.max(np.abs(got - want)) < 5 / math.sqrt(200_000)


def test_density_and_statevector_paths_agree_statistically():
    st = sims.random_circuit_state(5, 4, seed=9)
    rho = sims.to_density_matrix(st)
    labels = ["ZZIII", "XIXII", "IIYYI", "ZIIIZ"]
    exact = np.array([exact_expval(rho, lab) for lab in labels])
    for s in (st, rho):
        b = ShadowSampler(s, method="tree").sample(60_000, seed=12)
        e = qsense.ShadowEstimator(labels)
        e.update(b)
        r = e.estimate()
        _zscore_ok(r.values, exact, r.stderr)
    np.testing.assert_allclose(sims.bell_probabilities(st), sims.bell_probabilities(rho), atol=1e-14)


# ------------------------------------------------------------------ reproducibility, metadata, limits
def test_seed_reproducibility_and_generator_advances():
    st = sims.haar_random_state(3, seed=1)
    a = sims.sample_shadows(st, 1000, seed=5)
    b = sims.sample_shadows(st, 1000, seed=5)
    assert np.array_equal(a.bases, b.bases) and np.array_equal(a.outcomes, b.outcomes)
    g = np.random.default_rng(5)
    c = sims.sample_shadows(st, 1000, seed=g)
    d = sims.sample_shadows(st, 1000, seed=g)
    assert not np.array_equal(c.bases, d.bases)
    e1 = sims.sample_bell(st, 500, seed=3)
    e2 = sims.sample_bell(st, 500, seed=3)
    assert np.array_equal(e1.outcomes, e2.outcomes)


def test_metadata_and_wires():
    st = sims.ghz_state(3)
    b = sims.sample_shadows(st, 10, seed=1, wires=["a", "b", "c"], source="sim", seq=4)
    assert b.wires == ("a", "b", "c") and b.source == "sim" and b.seq == 4 and b.T == 10
    bb = sims.sample_bell(st, 10, seed=1, wires=[5, 6, 7], source="x", seq=2)
    assert bb.wires == (5, 6, 7) and bb.seq == 2
    assert sims.sample_shadows(st, 0, seed=1).T == 0
    assert sims.sample_bell(st, 0, seed=1).T == 0


def test_ghz_shadow_outcomes_are_consistent():
    """In an all-Z setting a GHZ snapshot has all bits equal (a deterministic check)."""
    b = sims.sample_shadows(sims.ghz_state(4), 20_000, seed=7)
    allz = np.all(b.bases == 2, axis=1)
    assert allz.sum() > 100
    o = b.outcomes[allz]
    assert np.all(o == o[:, :1])


def test_large_registers_bounded_memory():
    """Statevector n=20 and density matrix n=10 run through the chunked tree."""
    psi = sims.product_state("+" * 20)
    b = ShadowSampler(psi).sample(200, seed=1)
    assert b.bases.shape == (200, 20)
    # |+>^20: X-basis bits are always 0; Z-basis bits are fair coins
    assert np.all(b.outcomes[b.bases == 0] == 0)
    assert 0.3 < b.outcomes[b.bases == 2].mean() < 0.7
    rho = sims.to_density_matrix(sims.product_state("r" * 10))
    b = ShadowSampler(rho).sample(300, seed=2)
    assert np.all(b.outcomes[b.bases == 1] == 0)


def test_tree_memory_stays_within_budget():
    """Peak working memory (tracemalloc) stays near budget + a few state sizes,
    far below what processing a whole level at once would take."""
    import tracemalloc

    n, budget = 16, 1 << 16  # state 1 MiB, budget 1 MiB
    psi = sims.haar_random_state(n, seed=3)
    sampler = ShadowSampler(psi, method="tree", budget=budget)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        b = sampler.sample(300, seed=4)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert b.T == 300
    # level 3 alone holds up to 216 children of 2^13 amplitudes (27 MiB) if not chunked
    assert peak < 4 * psi.nbytes + 16 * budget + (2 << 20), peak / 2**20


def test_invalid_inputs():
    with pytest.raises(ValueError):
        sims.sample_shadows(np.ones(3) / math.sqrt(3), 10)
    with pytest.raises(ValueError):
        sims.sample_shadows(np.array([1.0, 1.0]), 10)  # not normalised
    with pytest.raises(ValueError):
        sims.sample_shadows(np.array([[1.0, 0.3], [0.0, 0.0]]), 10)  # not Hermitian
    with pytest.raises(ValueError):
        sims.sample_shadows(np.diag([1.5, -0.5]), 10)  # not positive
    with pytest.raises(ValueError):
        sims.sample_shadows(sims.ghz_state(2), -1)
    with pytest.raises(ValueError):
        sims.sample_bell(sims.product_state("0" * 12), 10)  # 4^12 outcomes: above the limit
    with pytest.raises(ValueError):
        sims.sample_bell_pair(sims.ghz_state(2), sims.ghz_state(3), 10)
    with pytest.raises(ValueError):
        ShadowSampler(sims.ghz_state(9), method="table")


def test_pennylane_classical_shadow_conventions_agree():
    """Our exact law equals the law of PennyLane's own ``qml.classical_shadow``:
    PennyLane's snapshots of the same state give chi-square-consistent classes."""
    import pennylane as qml

    st = sims.haar_random_state(2, seed=17)
    dev = qml.device("default.qubit", wires=2, seed=42)

    @qml.set_shots(30_000)
    @qml.qnode(dev)
    def circuit():
        qml.StatePrep(st, wires=[0, 1])
        return qml.classical_shadow(wires=[0, 1])

    bits, recipes = circuit()
    batch = qsense.ShadowBatch.from_pennylane(bits, recipes)
    counts = np.bincount(shadow_class_index(batch), minlength=36)
    assert chi2_pvalue(counts, sims.shadow_probabilities(st)) > 1e-3
