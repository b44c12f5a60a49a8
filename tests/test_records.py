"""Record validation and conversions."""

from __future__ import annotations

import numpy as np
import pennylane as qml
import pytest

from qsense import BellBatch, ShadowBatch, concatenate


def test_shadow_batch_validation():
    ok = ShadowBatch(np.zeros((4, 3), dtype=np.int64), np.ones((4, 3), dtype=bool))
    assert ok.bases.dtype == np.uint8 and ok.outcomes.dtype == np.uint8 and ok.T == 4 and ok.n == 3
    assert ok.wires == (0, 1, 2) and ok.t.shape == (4,)
    cases = [
        (dict(bases=np.zeros(4), outcomes=np.zeros(4)), "2-D"),
        (dict(bases=np.zeros((4, 3)), outcomes=np.zeros((4, 2))), "same shape"),
        (dict(bases=np.full((2, 2), 3), outcomes=np.zeros((2, 2))), "0..2"),
        (dict(bases=np.zeros((2, 2)), outcomes=np.full((2, 2), 2)), "0..1"),
        (dict(bases=np.full((2, 2), -1), outcomes=np.zeros((2, 2))), "0..2"),
        (dict(bases=np.full((2, 2), np.nan), outcomes=np.zeros((2, 2))), "NaN"),
        (dict(bases=np.full((2, 2), 0.5), outcomes=np.zeros((2, 2))), "integers"),
        (dict(bases=np.array([["a", "b"]]), outcomes=np.zeros((1, 2))), "integer array"),
        (dict(bases=np.zeros((2, 2)), outcomes=np.zeros((2, 2)), wires=(0,)), "wires"),
        (dict(bases=np.zeros((2, 2)), outcomes=np.zeros((2, 2)), wires=(0, 0)), "distinct"),
        (dict(bases=np.zeros((2, 2)), outcomes=np.zeros((2, 2)), t=np.zeros(3)), "shape"),
        (dict(bases=np.zeros((2, 2)), outcomes=np.zeros((2, 2)), t=np.array([0, np.nan])), "NaN"),
        (dict(bases=np.zeros((2, 2)), outcomes=np.zeros((2, 2)), seq=-1), "seq"),
        (dict(bases=np.zeros((1, 5000)), outcomes=np.zeros((1, 5000))), "limit"),
    ]
    for kw, msg in cases:
        with pytest.raises(ValueError, match=msg):
            ShadowBatch(**kw)


def test_bell_batch_validation_and_bits():
    b = BellBatch(np.array([[0, 1, 2, 3]]))
    a, bb = b.bits
    np.testing.assert_array_equal(a, [[0, 0, 1, 1]])
    np.testing.assert_array_equal(bb, [[0, 1, 0, 1]])
    inter = b.to_interleaved()
    np.testing.assert_array_equal(inter, [[0, 0, 0, 1, 1, 0, 1, 1]])
    np.testing.assert_array_equal(BellBatch.from_interleaved(inter).outcomes, b.outcomes)
    with pytest.raises(ValueError, match="even"):
        BellBatch.from_interleaved(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="wait"):
        BellBatch(np.zeros((2, 2)), wait=np.array([0.0, -1.0]))


def test_pennylane_round_trip():
    rng = np.random.default_rng(0)
    bits, rec = rng.integers(0, 2, (50, 3)), rng.integers(0, 3, (50, 3))
    sh = qml.ClassicalShadow(bits, rec, wire_map=["a", "b", "c"])
    b = ShadowBatch.from_pennylane(sh, None)
    assert b.wires == ("a", "b", "c")
    back = b.to_pennylane()
    np.testing.assert_array_equal(back.bits, bits)
    np.testing.assert_array_equal(back.recipes, rec)


def test_concatenate_and_slice():
    rng = np.random.default_rng(1)
    b = ShadowBatch(rng.integers(0, 3, (10, 2)), rng.integers(0, 2, (10, 2)), t=np.arange(10.0))
    j = concatenate([b[:3], b[3:7], b[7:]])
    np.testing.assert_array_equal(j.bases, b.bases)
    np.testing.assert_array_equal(j.t, b.t)
    assert b[4].T == 1 and b[-1].T == 1
    with pytest.raises(ValueError, match="different wires"):
        concatenate([b, b.with_meta(wires=("x", "y"))])
    with pytest.raises(ValueError, match="cannot concatenate"):
        concatenate([b, BellBatch(np.zeros((1, 2)))])
