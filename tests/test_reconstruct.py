"""Reduced-state reconstruction: equal to PennyLane's mean global snapshot, unbiased,
projected to the nearest state, entropies (and their bias), bad input."""

from __future__ import annotations

import itertools

import numpy as np
import pennylane as qml
import pytest
from exact import dm, random_density, random_state, reduced

from qsense import ShadowBatch, ShadowEstimator, ShadowPurity, sims
from qsense.estimators.reconstruct import ReconstructionError, entropy, project_physical, reduced_state


@pytest.fixture(scope="module")
def pl_shadow():
    """A real PennyLane classical-shadow measurement of an entangled 4-qubit circuit."""
    dev = qml.device("default.qubit", wires=4, seed=11)

    @qml.set_shots(shots=2000)
    @qml.qnode(dev)
    def circuit():
        qml.Hadamard(0)
        qml.CNOT([0, 1])
        qml.RY(0.7, 2)
        qml.CNOT([1, 2])
        qml.RX(0.3, 3)
        qml.CZ([2, 3])
        return qml.classical_shadow(wires=range(4))

    bits, recipes = circuit()
    return np.asarray(bits, dtype=np.int64), np.asarray(recipes, dtype=np.int64)


@pytest.mark.parametrize("wires", [[0], [2, 0], [1, 2, 3], [3, 1, 0, 2]])
def test_equals_pennylane_mean_global_snapshot(pl_shadow, wires):
    bits, recipes = pl_shadow
    shadow = qml.ClassicalShadow(bits, recipes)
    expected = np.mean(shadow.global_snapshots(wires=wires), axis=0)
    batch = ShadowBatch.from_pennylane(bits, recipes)
    got = reduced_state(batch, wires)
    assert np.max(np.abs(got - expected)) <= 1e-10
    assert np.trace(got).real == pytest.approx(1.0, abs=1e-12) and np.allclose(got, got.conj().T)
    # straight from the qml.ClassicalShadow, and streamed through a ShadowPurity in pieces
    assert np.max(np.abs(reduced_state(shadow, wires) - expected)) <= 1e-10
    est = ShadowPurity([sorted(wires)])
    for lo in range(0, batch.T, 333):
        est.update(batch[lo : lo + 333])
    merged = ShadowPurity.from_bytes(est.to_bytes())
    assert np.max(np.abs(reduced_state(merged, wires) - expected)) <= 1e-10


def test_from_a_shadow_estimator_tracking_all_paulis(pl_shadow):
    bits, recipes = pl_shadow
    batch = ShadowBatch.from_pennylane(bits, recipes)
    words = [f"{a}1 {b}3" for a, b in itertools.product("XYZ", repeat=2)] + [f"{a}1" for a in "XYZ"] + [f"{a}3" for a in "XYZ"]
    est = ShadowEstimator(words)
    est.update(batch[:700])
    est.update(batch[700:])
    expected = np.mean(qml.ClassicalShadow(bits, recipes).global_snapshots(wires=[1, 3]), axis=0)
    assert np.max(np.abs(reduced_state(est, [1, 3]) - expected)) <= 1e-10
    with pytest.raises(ReconstructionError, match="does not track"):
        reduced_state(est, [0, 1])


def test_unbiased_against_the_exact_reduced_state():
    """The mean of 60 independent 2-qubit estimates matches the exact reduced density
    matrix entry by entry within 4 standard errors of the mean."""
    rng = np.random.default_rng(5)
    rho = random_density(3, rng, rank=2)
    truth = reduced(rho, (0, 2), 3)
    ests = np.array([reduced_state(sims.sample_shadows(rho, 500, seed=s), [0, 2]) for s in range(60)])
    err = np.abs(ests.mean(axis=0) - truth)
    se = np.sqrt(ests.real.var(axis=0) + ests.imag.var(axis=0)) / np.sqrt(len(ests))
    assert np.all(err <= 4 * se + 1e-12), (err / (se + 1e-15)).max()


def test_physical_projection_is_the_nearest_state():
    rng = np.random.default_rng(2)
    rho = dm(random_state(3, rng))
    raw = reduced_state(sims.sample_shadows(rho, 300, seed=1), [0, 1, 2])
    assert np.linalg.eigvalsh(raw).min() < -0.05  # a raw estimate is not a state
    phys = reduced_state(sims.sample_shadows(rho, 300, seed=1), [0, 1, 2], project="physical")
    lam = np.linalg.eigvalsh(phys)
    assert lam.min() >= -1e-12 and np.trace(phys).real == pytest.approx(1.0)
    d = np.linalg.norm(phys - raw)
    for s in range(30):  # no random state (pure or mixed) is closer to the raw estimate
        other = random_density(3, np.random.default_rng(100 + s), rank=1 + s % 8)
        assert np.linalg.norm(other - raw) >= d - 1e-12
    # projecting a state changes nothing
    assert np.allclose(project_physical(phys), phys, atol=1e-12)


def test_entropies_equal_pennylane_and_exact_values(pl_shadow):
    bits, recipes = pl_shadow
    shadow = qml.ClassicalShadow(bits, recipes)
    batch = ShadowBatch.from_pennylane(bits, recipes)
    for wires in ([0], [0, 1], [1, 2, 3]):
        phys = reduced_state(batch, wires, project="physical")
        for alpha in (1, 2, 3):
            assert entropy(phys, alpha) == pytest.approx(float(shadow.entropy(wires, alpha=alpha, base=2)), abs=1e-9)
        assert entropy(phys, 1, base=np.e) == pytest.approx(entropy(phys, 1) * np.log(2))
    assert entropy(np.eye(8) / 8, 1) == pytest.approx(3.0)
    assert entropy(np.eye(8) / 8, np.inf) == pytest.approx(3.0)
    assert entropy(dm(random_state(2, np.random.default_rng(0))), 2) == pytest.approx(0.0, abs=1e-9)
    p = np.diag([0.5, 0.25, 0.25, 0.0])
    assert entropy(p, 1) == pytest.approx(1.5) and entropy(p, 2) == pytest.approx(-np.log2(0.375))


def test_plug_in_entropy_is_biased_upwards_for_a_nearly_pure_subsystem():
    """The documented bias: 3 qubits of a random pure 4-qubit state (S1 = 0.698 bits), 40
    seeds of N = 1,000: the projected estimate's von Neumann entropy is biased upwards by
    more than 0.15 bits (docs/estimators.md: +0.28 bits at N = 1,000 over 100 seeds)."""
    rng = np.random.default_rng(7)
    rho = dm(random_state(4, rng))
    truth = entropy(reduced(rho, (0, 1, 2), 4), 1)
    vals = [entropy(reduced_state(sims.sample_shadows(rho, 1000, seed=s), [0, 1, 2], project="physical"), 1)
            for s in range(40)]
    bias = np.mean(vals) - truth
    assert bias > 0.15 and bias > 5 * np.std(vals) / np.sqrt(len(vals)), bias


def test_bad_input():
    b = ShadowBatch(np.zeros((10, 3)), np.zeros((10, 3)))
    with pytest.raises(ReconstructionError, match="not among"):
        reduced_state(b, [0, 7])
    with pytest.raises(ReconstructionError, match="repeat"):
        reduced_state(b, [1, 1])
    with pytest.raises(ReconstructionError, match="at least one wire"):
        reduced_state(b, [])
    big = ShadowBatch(np.zeros((4, 9)), np.zeros((4, 9)))
    with pytest.raises(ReconstructionError, match="limited to 8"):
        reduced_state(big)
    with pytest.raises(ReconstructionError, match="project"):
        reduced_state(b, [0], project="nearest")
    est = ShadowPurity([(0, 1)])
    with pytest.raises(ReconstructionError, match="no data"):
        reduced_state(est, [0, 1])
    est.update(b)
    with pytest.raises(ReconstructionError, match="does not track"):
        reduced_state(est, [0, 2])
    with pytest.raises(ReconstructionError, match="expected a ShadowBatch"):
        reduced_state([[1, 0]], [0])
    with pytest.raises(ReconstructionError, match="negative eigenvalue"):
        entropy(np.diag([1.2, -0.2]))
    with pytest.raises(ReconstructionError, match="alpha"):
        entropy(np.eye(2) / 2, alpha=0)
    with pytest.raises(ReconstructionError, match="Hermitian"):
        entropy(np.array([[0.5, 1.0], [0.0, 0.5]]))
    with pytest.raises(ReconstructionError, match="2\\^k"):
        entropy(np.eye(3) / 3)
    assert issubclass(ReconstructionError, ValueError)
