"""State sources: normalisation, structure, chosen purity, reproducibility, drift."""

from __future__ import annotations

import math

import numpy as np
import pennylane as qml
import pytest

import qsense
from qsense import sims


def test_product_state_labels_and_angles():
    psi = sims.product_state("0+r")
    s = 1 / math.sqrt(2)
    want = np.kron(np.kron([1, 0], [s, s]), [s, 1j * s])
    np.testing.assert_allclose(psi, want, atol=1e-15)
    # Bloch angles: <X>, <Y>, <Z> = sin th cos ph, sin th sin ph, cos th
    th, ph = 1.1, 0.7
    v = sims.pauli_vector(sims.product_state([(th, ph)]))
    np.testing.assert_allclose(v, [1, math.sin(th) * math.cos(ph), math.sin(th) * math.sin(ph), math.cos(th)], atol=1e-14)
    # the r / l labels are the +1 / -1 eigenstates of Y
    assert abs(sims.pauli_vector(sims.product_state("r"))[2] - 1) < 1e-14
    assert abs(sims.pauli_vector(sims.product_state("l"))[2] + 1) < 1e-14
    np.testing.assert_allclose(np.abs(sims.product_state([np.array([1, 1j])])) ** 2, [0.5, 0.5])
    with pytest.raises(ValueError):
        sims.product_state("0q")
    with pytest.raises(ValueError):
        sims.product_state("")


def test_ghz_and_w():
    g = sims.ghz_state(4)
    assert g[0] == g[-1] == pytest.approx(1 / math.sqrt(2)) and np.count_nonzero(g) == 2
    w = sims.w_state(3)
    np.testing.assert_allclose(w[[1, 2, 4]], 1 / math.sqrt(3))
    assert np.count_nonzero(w) == 3
    # matches a PennyLane-prepared GHZ state (wire 0 most significant)
    dev = qml.device("default.qubit", wires=3)

    @qml.qnode(dev)
    def ghz():
        qml.Hadamard(0)
        qml.CNOT([0, 1])
        qml.CNOT([1, 2])
        return qml.state()

    np.testing.assert_allclose(ghz(), sims.ghz_state(3), atol=1e-14)
    with pytest.raises(ValueError):
        sims.ghz_state(0)


def test_haar_random_state_properties():
    a = sims.haar_random_state(5, seed=1)
    b = sims.haar_random_state(5, seed=1)
    assert np.array_equal(a, b) and abs(np.linalg.norm(a) - 1) < 1e-14
    assert not np.array_equal(a, sims.haar_random_state(5, seed=2))
    # Haar: E|<0|psi>|^2 = 1/d; average over many draws
    rng = np.random.default_rng(0)
    m = np.mean([abs(sims.haar_random_state(3, rng)[0]) ** 2 for _ in range(4000)])
    assert abs(m - 1 / 8) < 0.01
    U = sims.haar_random_unitary(8, seed=3)
    np.testing.assert_allclose(U.conj().T @ U, np.eye(8), atol=1e-13)


@pytest.mark.parametrize("n,purity", [(1, 0.5), (2, 0.3), (3, 0.55), (4, 0.9), (3, 1.0), (2, 0.25)])
def test_random_mixed_state_has_chosen_purity(n, purity):
    rho = sims.random_mixed_state(n, purity, seed=7)
    assert rho.shape == (2**n, 2**n)
    assert abs(np.trace(rho) - 1) < 1e-12
    np.testing.assert_allclose(rho, rho.conj().T, atol=1e-14)
    assert np.linalg.eigvalsh(rho).min() > -1e-12
    assert abs(sims.purity(rho) - purity) < 1e-10
    with pytest.raises(ValueError):
        sims.random_mixed_state(n, 1 / 2**n / 2, seed=1)


def test_random_circuit_state_matches_pennylane():
    """Re-run the same gates with PennyLane: identical statevector."""
    n, depth, seed = 4, 3, 5
    psi = sims.random_circuit_state(n, depth, seed=seed)
    assert abs(np.linalg.norm(psi) - 1) < 1e-12
    rng = np.random.default_rng(seed)
    dev = qml.device("default.qubit", wires=n)

    @qml.qnode(dev)
    def circ():
        for layer in range(depth):
            for q in range(n):
                qml.QubitUnitary(sims.haar_random_unitary(2, rng), wires=q)
            for q in range(layer % 2, n - 1, 2):
                qml.CZ([q, q + 1])
        return qml.state()

    np.testing.assert_allclose(circ(), psi, atol=1e-12)
    np.testing.assert_allclose(sims.random_circuit_state(3, 0, seed=1), sims.product_state("000"))


def test_drifting_source_theta_and_signals():
    src = sims.DriftingSource(3, theta0=0.1, rate=0.05, steps=[(2.0, 0.3)])
    assert src.theta(0.0) == pytest.approx(0.1)
    assert src.theta(1.0) == pytest.approx(0.15)
    assert src.theta(2.0) == pytest.approx(0.1 + 0.1 + 0.3)
    labels = qsense.pauli_square_labels(3)
    for t in (0.0, 1.5, 3.0):
        cos_lab, sin_lab, c, s = src.expected_phase_signal(t)
        v = sims.pauli_vector(src(t))
        assert v[labels.index(cos_lab)] == pytest.approx(c, abs=1e-12)
        assert v[labels.index(sin_lab)] == pytest.approx(s, abs=1e-12)
        assert c == pytest.approx(math.cos(3 * src.theta(t)))
    # product probe with dephasing during the dwell: density matrix, decayed signal
    prod = sims.DriftingSource(2, theta0=0.4, probe="product", t2=1.0, dwell=0.2, signal=lambda t: 0.1 * math.sin(t))
    rho = prod(1.0)
    assert rho.shape == (4, 4)
    cos_lab, sin_lab, c, s = prod.expected_phase_signal(1.0)
    v = sims.pauli_vector(rho)
    labels2 = qsense.pauli_square_labels(2)
    assert v[labels2.index(cos_lab)] == pytest.approx(c, abs=1e-12)
    assert v[labels2.index(sin_lab)] == pytest.approx(s, abs=1e-12)
    assert c == pytest.approx(math.exp(-0.2) * math.cos(0.4 + 0.1 * math.sin(1.0)))
    with pytest.raises(ValueError):
        sims.DriftingSource(2, probe="cat")


def test_drifting_source_tracked_by_shadows():
    """Estimating <X^n> from shadows of the source at two times follows the step."""
    src = sims.DriftingSource(2, theta0=0.0, steps=[(1.0, math.pi / 4)])
    for t in (0.5, 1.5):
        cos_lab, _, c, _ = src.expected_phase_signal(t)
        b = sims.sample_shadows(src(t), 40_000, seed=int(10 * t))
        e = qsense.ShadowEstimator([cos_lab])
        e.update(b)
        r = e.estimate()
        assert abs(r.values[0] - c) < 5 * r.stderr[0]
