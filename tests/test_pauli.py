"""Pauli parsing: dense, sparse and PennyLane forms."""

from __future__ import annotations

import numpy as np
import pennylane as qml
import pytest

from qsense.pauli import compile_observables, parse_observable


def resolved(o, wires=(0, 1, 2, 3)):
    return [(c, t.resolve(wires)) for c, t in parse_observable(o).terms]


def test_dense_and_sparse_agree():
    assert resolved("XIZY") == resolved("X0 Z2 Y3") == resolved("X0@Z2@Y3") == resolved("X0*Z2 * Y3")
    assert resolved("IIII") == resolved("I") == [(1.0, ())]


def test_pennylane_forms():
    assert resolved(qml.X(0) @ qml.Z(2) @ qml.Y(3)) == resolved("XIZY")
    h = 0.5 * qml.X(0) - 2.0 * qml.Z(1) @ qml.Z(2)
    got = dict((t, c) for c, t in resolved(h))
    assert got == {((0, 1),): 0.5, ((1, 3), (2, 3)): -2.0}
    # labels resolve through the data's wires
    o = parse_observable(qml.X("b"))
    assert o.terms[0][1].resolve(("a", "b")) == ((1, 1),)


def test_compile_deduplicates_and_combines():
    obs = [parse_observable(x) for x in ["XX", "X0 X1", 0.5 * qml.X(0) @ qml.X(1) + qml.Z(1)]]
    t = compile_observables(obs, (0, 1))
    assert t.M == 2
    np.testing.assert_allclose(t.combine_matrix(), [[1, 0], [1, 0], [0.5, 1]])
    np.testing.assert_allclose(t.combine(np.array([2.0, 3.0])), [2, 2, 4])
    assert t.dense_codes().tolist() == [[1, 1], [0, 3]]


@pytest.mark.parametrize("bad", ["XA", "x0", "X0 Q1", "X0 X0", "X0 ?", "XYZ!"])
def test_rejects_bad_strings(bad):
    with pytest.raises(ValueError):
        parse_observable(bad)


def test_rejects_bad_operators():
    with pytest.raises(ValueError, match="not a Pauli"):
        parse_observable(qml.Hadamard(0))
    with pytest.raises(ValueError, match="complex"):
        parse_observable(1j * qml.X(0))
    with pytest.raises(ValueError):
        parse_observable(None)
