"""qsense.sims exact-value helpers against dense matrices (tests/exact.py) and PennyLane."""

from __future__ import annotations

import numpy as np
import pennylane as qml
import pytest

from exact import all_words, dm, expval, random_density, random_state, reduced
from qsense import sims


@pytest.mark.parametrize("n", [1, 3, 4])
def test_expval_square_purity_match_dense_matrices(n):
    rng = np.random.default_rng(n)
    words = all_words(n)[:: max(1, 4**n // 40)]
    for state, rho in [(psi := random_state(n, rng), dm(psi)), (r := random_density(n, rng), r)]:
        want = np.array([expval(rho, w) for w in words])
        assert np.allclose(sims.exact_expval(state, words), want, atol=1e-12)
        assert np.allclose(sims.exact_square(state, words), want**2, atol=1e-12)
        for keep in [tuple(range(n)), (0,), tuple(range(n - 1, -1, -2))]:
            red = reduced(rho, keep, n)
            assert sims.exact_purity(state, [keep])[0] == pytest.approx(np.trace(red @ red).real, abs=1e-12)
        assert sims.exact_renyi2(state)[0] == pytest.approx(-np.log2(np.trace(rho @ rho).real), abs=1e-12)


def test_labels_sums_and_pennylane_operators():
    psi = sims.ghz_state(3)
    v = sims.exact_expval(psi, ["XXX", "Z0 Z1", 0.5 * qml.X(0) @ qml.X(1) @ qml.X(2) - qml.Z(2), qml.Y(0) @ qml.Y(1) @ qml.X(2)])
    assert np.allclose(v, [1.0, 1.0, 0.5, -1.0], atol=1e-12)
    with pytest.raises(ValueError, match="per Pauli word"):
        sims.exact_square(psi, [0.5 * qml.X(0)])
    with pytest.raises(ValueError, match="outside"):
        sims.exact_expval(psi, ["Z5"])


def test_checks_a_pennylane_qnode():
    dev = qml.device("default.qubit", wires=3)

    @qml.qnode(dev)
    def circuit():
        qml.Hadamard(0)
        qml.CNOT([0, 1])
        qml.RY(0.7, wires=2)
        return qml.state()

    @qml.qnode(dev)
    def values():
        qml.Hadamard(0)
        qml.CNOT([0, 1])
        qml.RY(0.7, wires=2)
        return [qml.expval(qml.X(0) @ qml.X(1)), qml.expval(qml.Z(2)), qml.expval(qml.X(2) @ qml.Z(0))]

    assert np.allclose(sims.exact_expval(circuit(), ["X0 X1", "Z2", "Z0 X2"]), values(), atol=1e-12)
