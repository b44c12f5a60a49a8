"""ShadowEstimator / shadow_expval: exact against PennyLane and the density matrix."""

from __future__ import annotations

import numpy as np
import pennylane as qml
import pytest
from exact import dm, expval, random_state

import qsense
from qsense import ShadowBatch, ShadowEstimator

N_QUBITS = 3


def pennylane_shadow(psi: np.ndarray, shots: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    n = int(np.log2(len(psi)))
    dev = qml.device("default.qubit", wires=n, seed=seed)

    @qml.set_shots(shots)
    @qml.qnode(dev)
    def circuit():
        qml.StatePrep(psi, wires=range(n))
        return qml.classical_shadow(wires=range(n), seed=seed)

    bits, recipes = circuit()
    return np.asarray(bits), np.asarray(recipes)


@pytest.fixture(scope="module")
def pl_data():
    rng = np.random.default_rng(11)
    psi = random_state(N_QUBITS, rng)
    bits, recipes = pennylane_shadow(psi, 12000, seed=5)
    return psi, bits, recipes


OBS_STR = ["XII", "Z0 Y2", "XYZ", "IZZ", "Y1"]


def pl_obs():
    return [
        qml.X(0),
        qml.Z(0) @ qml.Y(2),
        qml.X(0) @ qml.Y(1) @ qml.Z(2),
        qml.Z(1) @ qml.Z(2),
        qml.Y(1),
        0.7 * qml.X(0) @ qml.X(1) - 0.2 * qml.Z(2) + 0.1 * qml.Identity(0),
    ]


@pytest.mark.parametrize("k", [1, 2, 7, 10, 33])
def test_batch_form_equals_pennylane(pl_data, k):
    _, bits, recipes = pl_data
    shadow = qml.ClassicalShadow(bits, recipes)
    batch = ShadowBatch.from_pennylane(bits, recipes)
    ours = qsense.shadow_expval(batch, pl_obs(), k=k)
    theirs = shadow.expval(pl_obs(), k=k)
    np.testing.assert_allclose(ours, theirs, atol=1e-12, rtol=0)


def test_string_and_pennylane_forms_agree(pl_data):
    _, bits, recipes = pl_data
    batch = ShadowBatch.from_pennylane(bits, recipes)
    a = qsense.shadow_expval(batch, OBS_STR, k=3)
    b = qsense.shadow_expval(batch, pl_obs()[:5], k=3)
    np.testing.assert_allclose(a, b, atol=1e-12)


def test_online_groups1_equals_pennylane_any_split(pl_data):
    _, bits, recipes = pl_data
    theirs = qml.ClassicalShadow(bits, recipes).expval(pl_obs(), k=1)
    batch = ShadowBatch.from_pennylane(bits, recipes)
    rng = np.random.default_rng(3)
    cuts = np.sort(rng.choice(np.arange(1, batch.T), size=40, replace=False))
    est = ShadowEstimator(pl_obs(), groups=1)
    for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, batch.T]):
        est.update(batch[lo:hi])
    r = est.estimate()
    np.testing.assert_allclose(r.values, theirs, atol=1e-12, rtol=0)
    assert r.count == batch.T


def test_estimates_match_density_matrix(pl_data):
    psi, bits, recipes = pl_data
    rho = dm(psi)
    est = ShadowEstimator(OBS_STR, groups=1)
    est.update(ShadowBatch.from_pennylane(bits, recipes))
    r = est.estimate()
    truth = np.array([expval(rho, w) for w in ["XII", "ZIY", "XYZ", "IZZ", "IYI"]])
    z = np.abs(r.values - truth) / r.stderr
    assert np.all(z < 4), (r, truth)


def test_median_of_means_block_scheme_bounded():
    rng = np.random.default_rng(0)
    K = 6
    est = ShadowEstimator(["ZZ", "X0"], groups=K)
    total = 0
    for size in rng.integers(1, 500, size=200):
        b = ShadowBatch(rng.integers(0, 3, (size, 2)), rng.integers(0, 2, (size, 2)))
        est.update(b)
        total += size
        nb = len(est._counts)
        assert nb <= 2 * K
        if total >= K:
            assert nb >= K
        # every block but the last is full, all hold consecutive snapshots
        assert np.all(est._counts[:-1] == est.capacity)
    assert est.count == total


def test_mom_online_is_median_of_block_means():
    """Blocks of the online scheme are contiguous; each term pools them, in order, into
    G = min(K, N / (3^k 10)) groups by block midpoint: recompute the medians by hand."""
    from qsense.estimators.shadow import term_groups

    rng = np.random.default_rng(1)
    b = ShadowBatch(rng.integers(0, 3, (5000, 3)), rng.integers(0, 2, (5000, 3)))
    est = ShadowEstimator(["XYZ", "ZII", "ZZZ"], groups=4)
    for lo in range(0, 5000, 313):
        est.update(b[lo : lo + 313])
    counts = est._counts
    edges = np.r_[0, np.cumsum(counts)]
    mid = edges[1:] - counts / 2
    assert list(term_groups(5000, np.array([3, 1]), 4)) == [4, 4]
    for j, w in enumerate(["XYZ", "ZII"]):
        gid = np.minimum((mid * 4 / 5000).astype(int), 3)
        means = []
        for g in range(4):
            lo, hi = edges[:-1][gid == g].min(), edges[1:][gid == g].max()
            means.append(qsense.shadow_expval(b[lo:hi], [w], k=1)[0])
        assert est.estimate().values[j] == pytest.approx(np.median(means), abs=1e-12)


def test_mom_falls_back_to_the_mean_for_sparse_terms():
    """A term whose groups would expect < 10 matches uses the plain mean of all snapshots."""
    rng = np.random.default_rng(3)
    b = ShadowBatch(rng.integers(0, 3, (4000, 6)), rng.integers(0, 2, (4000, 6)))
    est = ShadowEstimator(["ZZZZZZ", "XXXXXI"], groups=10)
    est.update(b)
    plain = ShadowEstimator(["ZZZZZZ", "XXXXXI"])
    plain.update(b)
    # weight 6: 4000/729 = 5.5 expected matches in all: one group; weight 5: 16.5: one group
    np.testing.assert_array_equal(est.estimate().values, plain.estimate().values)
    np.testing.assert_array_equal(est.estimate().stderr, plain.estimate().stderr)


def test_shadow_expval_warns_on_sparse_groups():
    rng = np.random.default_rng(4)
    b = ShadowBatch(rng.integers(0, 3, (4000, 6)), rng.integers(0, 2, (4000, 6)))
    with pytest.warns(qsense.estimators.shadow.SparseGroupWarning, match="expect 0.549 matches"):
        qsense.shadow_expval(b, ["ZZZZZZ"], k=10)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        qsense.shadow_expval(b, ["ZZZZZZ"], k=1)  # one group of 4000: 5.5 expected, but k=1 is the mean
        qsense.shadow_expval(b, ["ZZIIII"], k=10)  # 400 / 9 = 44 per group


def test_merge_equals_concatenation():
    rng = np.random.default_rng(2)
    b = ShadowBatch(rng.integers(0, 3, (3000, 4)), rng.integers(0, 2, (3000, 4)))
    obs = ["XXII", "Z3", "Y0 Y1 Y2"]
    one = ShadowEstimator(obs)
    one.update(b)
    a, c = ShadowEstimator(obs), ShadowEstimator(obs)
    a.update(b[:1234])
    c.update(b[1234:])
    a.merge(c)
    np.testing.assert_allclose(a.estimate().values, one.estimate().values, atol=1e-12)
    np.testing.assert_allclose(a.estimate().stderr, one.estimate().stderr, atol=1e-12)
    # with median of means the merged estimator keeps its block bound
    a, c = ShadowEstimator(obs, groups=3), ShadowEstimator(obs, groups=3)
    a.update(b[:1500])
    c.update(b[1500:])
    a.merge(c)
    assert len(a._counts) <= 6 and a.count == 3000


def test_checkpoint_round_trip():
    rng = np.random.default_rng(4)
    b = ShadowBatch(rng.integers(0, 3, (999, 3)), rng.integers(0, 2, (999, 3)), wires=("a", "b", "c"))
    est = ShadowEstimator(["XYZ", qml.X("a") @ qml.Z("c"), 0.5 * qml.Y("b")], groups=5)
    est.update(b[:500])
    blob = est.to_bytes()
    back = ShadowEstimator.from_bytes(blob)
    np.testing.assert_array_equal(back.estimate().values, est.estimate().values)
    est.update(b[500:])
    back.update(b[500:])
    np.testing.assert_array_equal(back.estimate().values, est.estimate().values)
    with pytest.raises(ValueError):
        ShadowEstimator.from_bytes(b"garbage")
    with pytest.raises(ValueError):
        qsense.BellEstimator.from_bytes(blob)


def test_matched_ratio_option():
    rng = np.random.default_rng(5)
    b = ShadowBatch(rng.integers(0, 3, (2000, 3)), rng.integers(0, 2, (2000, 3)))
    est = ShadowEstimator(["XZI", "YYY"], method="matched")
    est.update(b)
    w = np.array([[0, 2, -1], [1, 1, 1]])
    for j in range(2):
        match = np.all((b.bases == w[j]) | (w[j] == -1), axis=1)
        par = 1 - 2 * (np.sum(np.where(w[j] == -1, 0, b.outcomes.astype(int)), axis=1) % 2)
        assert est.estimate().values[j] == pytest.approx(par[match].mean(), abs=1e-12)


def test_error_bars_cover_truth_at_stated_rate():
    """Over many seeds the 1-sigma interval covers the truth ~68% of the time."""
    import sims  # noqa: F401  (exact sampler, issue 3)

    rng = np.random.default_rng(7)
    psi = random_state(3, rng)
    rho = dm(psi)
    words = ["XII", "ZZI", "XYZ", "IIY"]
    truth = np.array([expval(rho, w) for w in words])
    hits, total = 0, 0
    for seed in range(200):
        b = sims.sample_shadows(psi, 400, seed=seed)
        est = ShadowEstimator(words)
        est.update(b)
        r = est.estimate()
        hits += int(np.sum(np.abs(r.values - truth) <= r.stderr))
        total += len(words)
    rate = hits / total
    assert 0.62 < rate < 0.74, rate


@pytest.mark.parametrize(
    "bad, msg",
    [
        ("XQZ", "unknown Pauli letter 'Q'"),
        ("X0 W2", "unknown Pauli letter 'W'"),
        ("X0 X0", "twice"),
        ("X0 &", "cannot parse"),
    ],
)
def test_bad_observables_rejected(bad, msg):
    with pytest.raises(ValueError, match=msg):
        ShadowEstimator([bad])


def test_bad_observables_pennylane():
    with pytest.raises(ValueError, match="not a Pauli|Pauli representation"):
        ShadowEstimator([qml.Hadamard(0)])
    with pytest.raises(ValueError, match="complex coefficient"):
        ShadowEstimator([qml.Y(0) @ qml.Z(0)])
    with pytest.raises(ValueError, match="Pauli observable"):
        ShadowEstimator([3.5])
    b = ShadowBatch(np.zeros((5, 2)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="outside the data's 2 wires"):
        qsense.shadow_expval(b, ["XXX"])
    with pytest.raises(ValueError, match="not among the data's wires"):
        qsense.shadow_expval(b, [qml.X(7)])
    with pytest.raises(ValueError, match="k must be a positive integer"):
        qsense.shadow_expval(b, ["XX"], k=0)
    with pytest.raises(ValueError, match="groups"):
        ShadowEstimator(["XX"], groups=0)


def test_wire_mismatch_rejected():
    est = ShadowEstimator(["XX"])
    est.update(ShadowBatch(np.zeros((3, 2)), np.zeros((3, 2))))
    with pytest.raises(ValueError, match="differ"):
        est.update(ShadowBatch(np.zeros((3, 2)), np.zeros((3, 2)), wires=("a", "b")))
    with pytest.raises(ValueError, match="no data"):
        ShadowEstimator(["X0"]).estimate()


def test_median_of_means_error_bars_cover_truth():
    from qsense import sims

    rng = np.random.default_rng(17)
    psi = random_state(3, rng)
    rho = dm(psi)
    words = ["XII", "ZZI", "XYZ"]
    truth = np.array([expval(rho, w) for w in words])
    hits = 0
    for seed in range(200):
        est = ShadowEstimator(words, groups=5)
        est.update(sims.sample_shadows(psi, 600, seed=seed))
        r = est.estimate()
        hits += int(np.sum(np.abs(r.values - truth) <= r.stderr))
    rate = hits / (200 * len(words))
    assert 0.60 < rate < 0.76, rate


@pytest.mark.parametrize("groups", [1, 4])
def test_error_bar_of_a_pauli_sum_includes_term_correlations(groups):
    from qsense import sims

    # near |00>, x(Z0), x(Z1) and x(Z0 Z1) are strongly correlated per snapshot:
    # adding their errors in quadrature would understate the spread by ~25%
    rng = np.random.default_rng(6)
    psi = np.array([1.0, 0, 0, 0]) + 0.15 * random_state(2, rng)
    psi /= np.linalg.norm(psi)
    rho = dm(psi)
    H = qml.Z(0) + qml.Z(0) @ qml.Z(1) + qml.Z(1)
    truth = expval(rho, "ZI") + expval(rho, "ZZ") + expval(rho, "IZ")
    vals, ses = [], []
    for seed in range(200):
        est = ShadowEstimator([H], groups=groups)
        est.update(sims.sample_shadows(psi, 500, seed=seed))
        r = est.estimate()
        vals.append(r.values[0])
        ses.append(r.stderr[0])
    assert abs(np.mean(vals) - truth) < 4 * np.std(vals) / np.sqrt(200)
    assert 0.88 < np.mean(ses) / np.std(vals) < 1.14, (np.mean(ses), np.std(vals))
    # the moments survive checkpoints and merges
    back = ShadowEstimator.from_bytes(est.to_bytes())
    assert back.estimate().stderr[0] == pytest.approx(r.stderr[0])
