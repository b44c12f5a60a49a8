"""Noise channels: CPTP, textbook Kraus forms, wire handling, and the memory model."""

from __future__ import annotations

import math
from functools import reduce

import numpy as np
import pennylane as qml
import pytest

import qsense
from qsense import sims
from qsense.sims import channels

I2 = np.eye(2, dtype=complex)
X = np.array([[0, 1], [1, 0]], dtype=complex)
Y = np.array([[0, -1j], [1j, 0]], dtype=complex)
Z = np.array([[1, 0], [0, -1]], dtype=complex)


def kron(*ms):
    return reduce(np.kron, ms)


def naive_apply(rho, kraus, wires, n):
    """Reference: embed each Kraus operator with kron (single-qubit, one wire)."""
    (w,) = wires
    out = np.zeros_like(rho)
    for K in kraus:
        full = kron(*[K if q == w else I2 for q in range(n)])
        out += full @ rho @ full.conj().T
    return out


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 1.0])
def test_all_channels_are_cptp(p):
    for kraus in (channels.depolarizing(p), channels.dephasing(p), channels.amplitude_damping(p), channels.phase_damping(p)):
        assert channels.is_cptp(kraus)
        ks = np.array(kraus)
        np.testing.assert_allclose(np.einsum("kji,kjl->il", ks.conj(), ks), I2, atol=1e-14)
    assert channels.is_cptp(channels.depolarizing(4 / 3))
    for model in channels.DECOHERENCE_MODELS:
        assert channels.is_cptp(channels.memory_channel(0.3, t1=1.0, t2=0.7, model=model))


def test_textbook_kraus_forms():
    p = 0.3
    np.testing.assert_allclose(
        channels.depolarizing(p),
        [math.sqrt(1 - 3 * p / 4) * I2, math.sqrt(p) / 2 * X, math.sqrt(p) / 2 * Y, math.sqrt(p) / 2 * Z],
    )
    np.testing.assert_allclose(channels.dephasing(p), [math.sqrt(1 - p) * I2, math.sqrt(p) * Z])
    g = 0.4
    np.testing.assert_allclose(channels.amplitude_damping(g), [np.array([[1, 0], [0, math.sqrt(1 - g)]]), np.array([[0, math.sqrt(g)], [0, 0]])])
    np.testing.assert_allclose(channels.phase_damping(g), [np.array([[1, 0], [0, math.sqrt(1 - g)]]), np.array([[0, 0], [0, math.sqrt(g)]])])


def test_same_channels_as_pennylane():
    """Same superoperators as PennyLane's channels (DepolarizingChannel(q) = ours with p = 4q/3)."""
    q = 0.2
    S = channels.superoperator
    np.testing.assert_allclose(S(channels.depolarizing(4 * q / 3)), S(qml.DepolarizingChannel(q, wires=0).kraus_matrices()), atol=1e-14)
    np.testing.assert_allclose(S(channels.dephasing(q)), S(qml.PhaseFlip(q, wires=0).kraus_matrices()), atol=1e-14)
    np.testing.assert_allclose(S(channels.amplitude_damping(q)), S(qml.AmplitudeDamping(q, wires=0).kraus_matrices()), atol=1e-14)
    np.testing.assert_allclose(S(channels.phase_damping(q)), S(qml.PhaseDamping(q, wires=0).kraus_matrices()), atol=1e-14)


def test_channel_actions_on_paulis():
    rho = sims.random_mixed_state(1, 0.9, seed=1)
    p = 0.35
    np.testing.assert_allclose(channels.apply_channel(rho, channels.depolarizing(p)), (1 - p) * rho + p * I2 / 2, atol=1e-14)
    v = sims.pauli_vector(rho)
    vd = sims.pauli_vector(channels.apply_channel(rho, channels.dephasing(p)))
    np.testing.assert_allclose(vd, [1, (1 - 2 * p) * v[1], (1 - 2 * p) * v[2], v[3]], atol=1e-14)
    g = 0.3
    va = sims.pauli_vector(channels.apply_channel(rho, channels.amplitude_damping(g)))
    np.testing.assert_allclose(va, [1, math.sqrt(1 - g) * v[1], math.sqrt(1 - g) * v[2], g + (1 - g) * v[3]], atol=1e-14)


def test_apply_channel_wires_match_naive_embedding():
    n = 3
    rho = sims.random_mixed_state(n, 0.5, seed=2)
    k = channels.amplitude_damping(0.45)
    for w in range(n):
        np.testing.assert_allclose(channels.apply_channel(rho, k, [w]), naive_apply(rho, k, [w], n), atol=1e-14)
    # a single-qubit channel on several wires = applied to each in turn
    both = naive_apply(naive_apply(rho, k, [0], n), k, [2], n)
    np.testing.assert_allclose(channels.apply_channel(rho, k, [0, 2]), both, atol=1e-14)
    # a two-qubit channel (a CNOT as one Kraus operator) acts jointly, in wire order
    cnot = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]], dtype=complex)
    got = channels.apply_channel(rho, [cnot], [2, 0])  # control wire 2, target wire 0
    U = qml.matrix(qml.CNOT(wires=[2, 0]), wire_order=[0, 1, 2])
    np.testing.assert_allclose(got, U @ rho @ U.conj().T, atol=1e-14)
    # statevectors are accepted
    psi = sims.ghz_state(3)
    np.testing.assert_allclose(channels.apply_channel(psi, k, 1), naive_apply(np.outer(psi, psi.conj()), k, [1], 3), atol=1e-14)
    with pytest.raises(ValueError):
        channels.apply_channel(rho, [cnot], [0, 1, 2])
    with pytest.raises(ValueError):
        channels.apply_channel(rho, k, [3])


def test_matches_pennylane_default_mixed():
    rho = sims.random_mixed_state(2, 0.6, seed=3)
    dev = qml.device("default.mixed", wires=2)

    @qml.qnode(dev)
    def circ():
        qml.QubitDensityMatrix(rho, wires=[0, 1])
        qml.AmplitudeDamping(0.3, wires=1)
        qml.PhaseFlip(0.2, wires=0)
        return qml.state()

    ours = channels.apply_channel(channels.apply_channel(rho, channels.amplitude_damping(0.3), [1]), channels.dephasing(0.2), [0])
    np.testing.assert_allclose(ours, circ(), atol=1e-12)


@pytest.mark.parametrize("model", ["depolarizing", "dephasing"])
def test_decohere_pauli_decay(model):
    """tr(P D_t rho) = exp(-w(P) t / T2) tr(P rho), w = weight (depolarizing) or #X,Y (dephasing)."""
    n, t, t2 = 3, 0.37, 0.9
    rho = sims.random_mixed_state(n, 0.7, seed=4)
    labels = qsense.pauli_square_labels(n)
    if model == "depolarizing":
        w = np.array([sum(c != "I" for c in lab) for lab in labels])
    else:
        w = np.array([sum(c in "XY" for c in lab) for lab in labels])
    got = sims.pauli_vector(sims.decohere(rho, t, t2=t2, model=model))
    np.testing.assert_allclose(got, np.exp(-w * t / t2) * sims.pauli_vector(rho), atol=1e-14)


def test_decohere_t1t2():
    t, t1, t2 = 0.4, 1.0, 0.6
    psi = sims.product_state([(1.1, 0.4)])  # a generic single-qubit state
    rho = np.outer(psi, psi.conj())
    out = sims.decohere(psi, t, t1=t1, t2=t2, model="t1t2")
    # populations relax with T1, coherences decay with T2
    assert abs(out[1, 1] - rho[1, 1] * math.exp(-t / t1)) < 1e-14
    assert abs(out[0, 1] - rho[0, 1] * math.exp(-t / t2)) < 1e-14
    # T2 = None means T2 = 2 T1 (amplitude damping alone)
    out2 = sims.decohere(rho, t, t1=t1, model="t1t2")
    assert abs(out2[0, 1] - rho[0, 1] * math.exp(-t / (2 * t1))) < 1e-14
    # T1 = None: pure dephasing
    out3 = sims.decohere(rho, t, t2=t2, model="t1t2")
    np.testing.assert_allclose(out3, sims.decohere(rho, t, t2=t2, model="dephasing"), atol=1e-14)
    with pytest.raises(ValueError, match="T2 <= 2 T1"):
        sims.decohere(rho, t, t1=1.0, t2=2.5, model="t1t2")
    # multi-qubit: GHZ coherence decays as exp(-n t / T2)
    g = sims.decohere(sims.ghz_state(3), t, t1=t1, t2=t2, model="t1t2")
    assert abs(g[0, 7] - 0.5 * math.exp(-3 * t / t2)) < 1e-14


def test_decohere_edge_cases():
    rho = sims.random_mixed_state(2, 0.8, seed=5)
    np.testing.assert_allclose(sims.decohere(rho, 0.0, t2=1.0), rho, atol=1e-15)
    np.testing.assert_allclose(sims.decohere(rho, 5.0), rho, atol=1e-15)  # T2 infinite
    full = sims.decohere(rho, 1e3, t2=1.0)
    np.testing.assert_allclose(full, np.eye(4) / 4, atol=1e-12)
    for bad in (dict(t=-1.0, t2=1.0), dict(t=1.0, t2=0.0), dict(t=1.0, t2=-2.0), dict(t=float("nan"), t2=1.0)):
        with pytest.raises(ValueError):
            sims.decohere(rho, **bad)
    with pytest.raises(ValueError):
        sims.decohere(rho, 1.0, t2=1.0, model="bogus")
    with pytest.raises(ValueError):
        channels.depolarizing(1.5)
    with pytest.raises(ValueError):
        channels.amplitude_damping(-0.1)


def test_decohered_first_copy_bias_and_reweighting():
    """docs/physics.md §3: a Bell pair whose first copy waited tau under local
    depolarizing estimates exp(-k tau/T2) tr(P rho)^2; BellEstimator(t2=T2) with
    ``wait`` removes the bias (and the purity's)."""
    n, tau, t2 = 3, 0.15, 1.0
    rho = sims.random_mixed_state(n, 0.8, seed=6)
    aged = sims.decohere(rho, tau, t2=t2)
    labels = ["ZZI", "XYZ", "IIX", "YYI"]
    k = np.array([2, 3, 1, 2])
    all_labels = qsense.pauli_square_labels(n)
    v = sims.pauli_vector(rho)
    exact = np.array([v[all_labels.index(lab)] for lab in labels]) ** 2
    # the exact two-copy law already shows the bias: E[shot value] = exp(-k tau/T2) tr(P rho)^2
    p = sims.bell_probabilities(aged, rho)
    va, vb = sims.pauli_vector(aged), sims.pauli_vector(rho)
    for lab, kk in zip(labels, k):
        i = all_labels.index(lab)
        assert abs(va[i] * vb[i] - math.exp(-kk * tau / t2) * v[i] ** 2) < 1e-14
    assert abs(p.sum() - 1) < 1e-12
    batch = sims.sample_bell_pair(aged, rho, 150_000, seed=8, wait=tau)
    biased = qsense.BellEstimator(labels)
    biased.update(batch)
    fixed = qsense.BellEstimator(labels, t2=t2)
    fixed.update(batch)
    rb, rf = biased.estimate(), fixed.estimate()
    assert np.all(np.abs(rb.values - np.exp(-k * tau / t2) * exact) < 5 * rb.stderr + 1e-12)
    assert np.all(np.abs(rf.values - exact) < 5 * rf.stderr + 1e-12)
    pf = fixed.purity()
    assert abs(pf.values[0] - sims.purity(rho)) < 5 * pf.stderr[0]
