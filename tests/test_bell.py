"""BellEstimator and all_pauli_squares against PennyLane Bell circuits and exact values."""

from __future__ import annotations

import numpy as np
import pennylane as qml
import pytest
from exact import all_words, dm, expval, random_density, random_state

import qsense
from qsense import BellBatch, BellEstimator


def pennylane_bell(psi: np.ndarray, shots: int, seed: int) -> BellBatch:
    """Two copies on wires A_i = 2i, B_i = 2i+1; CNOT(A_i, B_i), H(A_i); sample all."""
    n = int(np.log2(len(psi)))
    dev = qml.device("default.qubit", wires=2 * n, seed=seed)
    A = [2 * i for i in range(n)]
    B = [2 * i + 1 for i in range(n)]

    @qml.set_shots(shots)
    @qml.qnode(dev)
    def circuit():
        qml.StatePrep(np.kron(psi, psi), wires=A + B)
        for a, b in zip(A, B):
            qml.CNOT([a, b])
            qml.Hadamard(a)
        return qml.sample(wires=range(2 * n))

    return BellBatch.from_interleaved(np.asarray(circuit()))


@pytest.fixture(scope="module")
def bell_data():
    rng = np.random.default_rng(21)
    psi = random_state(3, rng)
    return psi, pennylane_bell(psi, 20000, seed=3)


def test_bell_conventions_on_bell_states():
    """Each Bell code is produced by the corresponding Bell state (docs/estimators.md)."""
    s = 1 / np.sqrt(2)
    states = {
        0: np.array([s, 0, 0, s]),  # Phi+
        1: np.array([0, s, s, 0]),  # Psi+
        2: np.array([s, 0, 0, -s]),  # Phi-
        3: np.array([0, s, -s, 0]),  # Psi-
    }
    dev = qml.device("default.qubit", wires=2)

    for code, st in states.items():
        @qml.qnode(dev)
        def circ():
            qml.StatePrep(st, wires=[0, 1])
            qml.CNOT([0, 1])
            qml.Hadamard(0)
            return qml.probs(wires=[0, 1])

        probs = np.asarray(circ())
        assert probs[code] == pytest.approx(1.0), (code, probs)
        # eigenvalues XX=(-1)^a, ZZ=(-1)^b, YY=-(-1)^(a+b)
        a, b = code >> 1, code & 1
        rho = dm(st)
        assert expval(rho, "XX") == pytest.approx((-1) ** a)
        assert expval(rho, "ZZ") == pytest.approx((-1) ** b)
        assert expval(rho, "YY") == pytest.approx(-((-1) ** (a + b)))


def test_bell_estimates_match_density_matrix(bell_data):
    psi, batch = bell_data
    rho = dm(psi)
    words = ["XII", "ZZI", "XYZ", "IYY", "ZIX"]
    est = BellEstimator(words)
    for lo in range(0, batch.T, 3000):
        est.update(batch[lo : lo + 3000])
    r = est.estimate()
    truth = np.array([expval(rho, w) ** 2 for w in words])
    assert np.all(np.abs(r.values - truth) < 4 * r.stderr + 1e-12), (r, truth)
    p = est.purity()
    assert abs(p.values[0] - 1.0) < 4 * p.stderr[0] + 1e-3


def test_all_pauli_squares_equals_per_pauli(bell_data):
    _, batch = bell_data
    words = all_words(3)
    allv = qsense.all_pauli_squares(batch)
    est = BellEstimator(words)
    est.update(batch)
    np.testing.assert_allclose(allv, est.estimate().values, atol=1e-12)
    assert qsense.pauli_square_labels(3) == words
    assert allv[0] == 1.0


def test_all_pauli_squares_exact_distribution():
    """With the exact outcome distribution as a histogram, the transform is exact."""
    rng = np.random.default_rng(0)
    rho = random_density(2, rng, rank=2)
    # Bell-code probabilities: p(a,b) = <beta_ab| rho(x)rho |beta_ab> per pair
    s = 1 / np.sqrt(2)
    bell = np.array([[s, 0, 0, s], [0, s, s, 0], [s, 0, 0, -s], [0, s, -s, 0]])  # codes 0..3
    # wires (A0, A1, B0, B1) -> reorder to (A0, B0, A1, B1)
    two = np.kron(rho, rho).reshape([2] * 8).transpose(0, 2, 1, 3, 4, 6, 5, 7).reshape(16, 16)
    basis = np.kron(bell, bell)  # rows: code0*4 + code1
    probs = np.real(np.einsum("ci,ij,cj->c", basis.conj(), two, basis))
    counts = np.round(probs * 1e6).astype(int)
    codes = np.repeat(np.arange(16), counts)
    batch = BellBatch(np.stack([codes // 4, codes % 4], axis=1))
    allv = qsense.all_pauli_squares(batch)
    truth = np.array([expval(rho, w) ** 2 for w in all_words(2)])
    np.testing.assert_allclose(allv, truth, atol=2e-5)
    est = BellEstimator([], purity_subsystems=[(0,), (1,)])
    est.update(batch)
    assert est.purity().values[0] == pytest.approx(np.real(np.trace(rho @ rho)), abs=2e-5)


def test_purity_of_mixed_state_and_subsystems():
    from qsense import sims

    rng = np.random.default_rng(8)
    rho = random_density(3, rng, rank=3)
    from exact import reduced

    est = BellEstimator(["ZZZ"], purity_subsystems=[(0,), (1, 2)])
    est.update(sims.sample_bell(rho, 40000, seed=1))
    truth = [np.real(np.trace(r @ r)) for r in (rho, reduced(rho, (0,), 3), reduced(rho, (1, 2), 3))]
    for val, sub in zip(truth, [None, (0,), (1, 2)]):
        p = est.purity(sub)
        assert abs(p.values[0] - val) < 4 * p.stderr[0], (sub, p, val)


def test_decoherence_reweighting_removes_bias():
    """Copies that waited tau under depolarizing at rate 1/T2: reweighting undoes the bias."""
    from qsense import sims

    rng = np.random.default_rng(9)
    psi = random_state(2, rng)
    rho = dm(psi)
    t2, tau = 1.0, 0.3
    rho_wait = sims.decohere(rho, tau, t2=t2)
    batch = sims.sample_bell_pair(rho_wait, rho, 60000, seed=2).with_meta(wait=np.full(60000, tau))
    words = ["XY", "ZI", "YZ"]
    naive = BellEstimator(words)
    naive.update(batch)
    fixed = BellEstimator(words, t2=t2)
    fixed.update(batch)
    truth = np.array([expval(rho, w) ** 2 for w in words])
    r = fixed.estimate()
    assert np.all(np.abs(r.values - truth) < 4 * r.stderr), (r, truth)
    k = np.array([2, 1, 2])
    np.testing.assert_allclose(naive.estimate().values, truth * np.exp(-k * tau / t2), atol=4 * naive.estimate().stderr.max())
    p = fixed.purity()
    assert abs(p.values[0] - 1.0) < 4 * p.stderr[0]


def test_merge_and_checkpoint(bell_data):
    _, batch = bell_data
    words = ["XXI", "IZY"]
    one = BellEstimator(words, purity_subsystems=[(0, 1)])
    one.update(batch)
    a, b = BellEstimator(words, purity_subsystems=[(0, 1)]), BellEstimator(words, purity_subsystems=[(0, 1)])
    a.update(batch[:777])
    b.update(batch[777:])
    a.merge(b)
    np.testing.assert_allclose(a.estimate().values, one.estimate().values, atol=1e-12)
    np.testing.assert_allclose(a.purity((0, 1)).values, one.purity((0, 1)).values, atol=1e-12)
    back = BellEstimator.from_bytes(a.to_bytes())
    np.testing.assert_array_equal(back.estimate().values, a.estimate().values)
    assert back.count == a.count


def test_bad_inputs():
    with pytest.raises(ValueError, match="0..3"):
        BellBatch(np.array([[0, 4]]))
    with pytest.raises(ValueError, match="limit"):
        qsense.all_pauli_squares(BellBatch(np.zeros((2, 13), dtype=np.uint8)))
    with pytest.raises(ValueError, match="t2"):
        BellEstimator(["XX"], t2=-1)
    est = BellEstimator(["XX"])
    with pytest.raises(ValueError, match="no data"):
        est.purity()
    est.update(BellBatch(np.zeros((3, 2), dtype=np.uint8)))
    with pytest.raises(ValueError, match="not tracked"):
        est.purity((0,))
    with pytest.raises(ValueError, match="BellBatch"):
        est.update(qsense.ShadowBatch(np.zeros((3, 2)), np.zeros((3, 2))))


def test_bell_error_bars_cover_truth_at_stated_rate():
    from qsense import sims

    rng = np.random.default_rng(12)
    rho = random_density(3, rng, rank=2)
    words = ["XII", "ZZI", "XYZ", "IIY"]
    truth = np.array([expval(rho, w) ** 2 for w in words] + [np.real(np.trace(rho @ rho))])
    hits = 0
    for seed in range(200):
        est = BellEstimator(words)
        est.update(sims.sample_bell(rho, 300, seed=seed))
        vals = np.r_[est.estimate().values, est.purity().values]
        errs = np.r_[est.estimate().stderr, est.purity().stderr]
        hits += int(np.sum(np.abs(vals - truth) <= errs))
    rate = hits / (200 * len(truth))
    assert 0.62 < rate < 0.75, rate


def test_error_bar_of_a_pauli_sum_includes_term_correlations():
    """sum_{P in XX,XY,YX,YY} tr(P rho)^2 on a 2-qubit state: the terms are strongly
    correlated shot by shot; the error bar must match the run-to-run spread."""
    from qsense import sims

    rng = np.random.default_rng(5)
    rho = random_density(2, rng, rank=1)
    obs = qml.X(0) @ qml.X(1) + qml.X(0) @ qml.Y(1) + qml.Y(0) @ qml.X(1) + qml.Y(0) @ qml.Y(1)
    vals, ses = [], []
    for seed in range(150):
        est = BellEstimator([obs])
        est.update(sims.sample_bell(rho, 400, seed=seed))
        r = est.estimate()
        vals.append(r.values[0])
        ses.append(r.stderr[0])
    truth = sum(expval(rho, w) ** 2 for w in ["XX", "XY", "YX", "YY"])
    assert abs(np.mean(vals) - truth) < 4 * np.std(vals) / np.sqrt(150)
    assert 0.88 < np.mean(ses) / np.std(vals) < 1.14, (np.mean(ses), np.std(vals))


def test_all_pauli_squares_online_equals_batch_and_round_trips(bell_data):
    psi, batch = bell_data
    est = qsense.AllPauliSquares()
    for lo in range(0, batch.T, 4321):
        est.update(batch[lo : lo + 4321])
    r = est.estimate()
    np.testing.assert_allclose(r.values, qsense.all_pauli_squares(batch), atol=1e-12)
    assert r.labels[5] == qsense.pauli_square_labels(3)[5] and r.count == batch.T
    rho = dm(psi)
    truth = np.array([expval(rho, w) ** 2 for w in all_words(3)])
    # error bars are honest: ~68% of the 64 values within one sigma (loose bounds)
    frac = np.mean(np.abs(r.values - truth) <= r.stderr + 1e-12)
    assert 0.5 < frac <= 1.0
    back = qsense.AllPauliSquares.from_bytes(est.to_bytes())
    np.testing.assert_array_equal(back.estimate().values, r.values)
    a, b = qsense.AllPauliSquares(), qsense.AllPauliSquares()
    a.update(batch[:1000])
    b.update(batch[1000:])
    np.testing.assert_allclose(a.merge(b).estimate().values, r.values, atol=1e-12)
    with pytest.raises(ValueError, match="limit"):
        qsense.AllPauliSquares(max_qubits=2).update(batch)


def test_bell_entropy_interval():
    from qsense import sims

    rho = random_density(2, np.random.default_rng(3), rank=2)
    est = BellEstimator([], purity_subsystems=[(0,)])
    est.update(sims.sample_bell(rho, 4000, seed=1))
    e, p = est.entropy(), est.purity()
    assert e.labels == ("S2",) and est.entropy((0,)).labels == ("S2[0]",)
    assert e.values[0] == pytest.approx(-np.log2(p.values[0]))
    assert 0.0 <= e.lower[0] <= e.values[0] <= e.upper[0] <= 2.0
