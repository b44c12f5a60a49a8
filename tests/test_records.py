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


# -- packed form ------------------------------------------------------------------------
def _shadow(rng, T=100, n=5, **kw):
    return ShadowBatch(rng.integers(0, 3, (T, n)), rng.integers(0, 2, (T, n)), t=rng.random(T), **kw)


def test_packed_is_cached_read_only_and_round_trips():
    rng = np.random.default_rng(10)
    b = _shadow(rng, wires="abcde", source="s", seq=3)
    assert not b.has_packed and b.has_tables
    p = b.packed()
    assert p is b.packed() and b.has_packed and p.shape == (3, 5, 2) and not p.flags.writeable
    c = ShadowBatch.from_packed(p, 100, wires=b.wires, source="s", seq=3, t=b.t)
    assert c.has_packed and not c.has_tables and (c.T, c.n, c.wires, c.source, c.seq) == (100, 5, b.wires, "s", 3)
    assert c.packed() is not None and not c.has_tables  # counting needs no tables
    np.testing.assert_array_equal(c.bases, b.bases)  # first read unpacks
    assert c.has_tables and c.bases is c.bases
    np.testing.assert_array_equal(c.outcomes, b.outcomes)
    np.testing.assert_array_equal(c.t, b.t)
    assert repr(c) == repr(b)
    bb = BellBatch(rng.integers(0, 4, (70, 3)), wait=rng.random(70), t=np.arange(70.0))
    q = BellBatch.from_packed(bb.packed(), 70, wait=bb.wait, t=bb.t)
    assert not q.has_tables and q.T == 70 and q.n == 3
    np.testing.assert_array_equal(q.bits[0], bb.bits[0])
    np.testing.assert_array_equal(q.outcomes, bb.outcomes)
    np.testing.assert_array_equal(q.wait, bb.wait)


def test_from_packed_validates():
    rng = np.random.default_rng(11)
    p = _shadow(rng).packed().copy()
    p[0, 0, 0] |= np.uint64(1)
    p[1, 0, 0] |= np.uint64(1)
    cases = [
        (lambda: ShadowBatch.from_packed(p, 100), "code 3"),
        (lambda: ShadowBatch.from_packed(p[:, :, :1], 100), "shape"),
        (lambda: ShadowBatch.from_packed(np.zeros((3, 5000, 1), np.uint64) | np.uint64(2**64 - 2), 1), "limit"),
        (lambda: ShadowBatch.from_packed(_shadow(rng).packed(), 100, t=np.zeros(3)), "shape"),
        (lambda: ShadowBatch.from_packed(_shadow(rng).packed(), 100, wires=(0,)), "wires"),
        (lambda: ShadowBatch.from_packed(_shadow(rng).packed(), 100, seq=-1), "seq"),
        (lambda: BellBatch.from_packed(np.full((2, 1, 1), 2**63, np.uint64), 1), "padding"),
        (lambda: BellBatch.from_packed(np.zeros((2, 1, 1), np.uint64), 1, wait=[-1.0]), "wait"),
        (lambda: BellBatch.from_packed(np.zeros((3, 1, 1), np.uint64), 1), "shape"),
    ]
    for make, msg in cases:
        with pytest.raises(ValueError, match=msg):
            make()
    # the caller's array keeps its flags
    mine = _shadow(rng).packed().copy()
    ShadowBatch.from_packed(mine, 100)
    assert mine.flags.writeable


def test_pickling_copies_and_meta_keep_behaviour():
    import copy
    import dataclasses
    import pickle

    rng = np.random.default_rng(12)
    b = _shadow(rng)
    before = pickle.dumps(b)
    b.packed()
    assert pickle.dumps(b) == before  # the cache is not pickled
    c = ShadowBatch.from_packed(b.packed(), b.T, t=b.t)
    for d in (pickle.loads(pickle.dumps(c)), copy.deepcopy(c), copy.copy(c)):
        assert d.T == 100 and d.n == 5
        np.testing.assert_array_equal(d.bases, b.bases)
    m = c.with_meta(seq=9, source="z")
    assert m.seq == 9 and m.source == "z" and not m.has_tables and m.packed() is c.packed()
    m2 = b.with_meta(seq=1)
    assert m2.has_packed and m2.packed() is b.packed()
    r = dataclasses.replace(c, seq=4)
    assert r.seq == 4 and r.has_tables
    np.testing.assert_array_equal(c[10:20].bases, b.bases[10:20])
    assert c[3].T == 1 and len(c) == 100
    with pytest.raises(AttributeError):
        c.no_such_attribute  # noqa: B018
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.seq = 3


def test_concatenate_packed_batches():
    rng = np.random.default_rng(13)
    parts = [_shadow(rng, T) for T in (64, 128, 37)]
    planes = [ShadowBatch.from_packed(p.packed(), p.T, t=p.t) for p in parts]
    j = concatenate(planes)
    assert not j.has_tables and j.has_packed and j.T == 229
    ref = concatenate(parts)  # the uint8 path
    np.testing.assert_array_equal(j.bases, ref.bases)
    np.testing.assert_array_equal(j.outcomes, ref.outcomes)
    np.testing.assert_array_equal(j.t, ref.t)
    # an inner batch that is not whole words: unpacked path, same result
    k = concatenate([planes[2], planes[0]])
    np.testing.assert_array_equal(k.bases, np.concatenate([parts[2].bases, parts[0].bases]))
    bells = [BellBatch(rng.integers(0, 4, (T, 2)), wait=rng.random(T)) for T in (64, 5)]
    jb = concatenate([BellBatch.from_packed(x.packed(), x.T, wait=x.wait) for x in bells])
    assert not jb.has_tables
    np.testing.assert_array_equal(jb.outcomes, concatenate(bells).outcomes)
    np.testing.assert_array_equal(jb.wait, concatenate(bells).wait)


def test_from_pennylane_takes_a_classical_shadow_alone_or_the_stacked_array():
    import pennylane as qml

    rng = np.random.default_rng(3)
    bits, recipes = rng.integers(0, 2, (50, 3)), rng.integers(0, 3, (50, 3))
    shadow = qml.ClassicalShadow(bits, recipes, wire_map=["a", "b", "c"])
    b = ShadowBatch.from_pennylane(shadow)  # one argument, as the docstring says
    assert b.wires == ("a", "b", "c") and np.array_equal(b.bases, recipes) and np.array_equal(b.outcomes, bits)
    s = ShadowBatch.from_pennylane(np.stack([bits, recipes]))  # qml.classical_shadow's own return value
    assert np.array_equal(s.bases, recipes) and np.array_equal(s.outcomes, bits)
    with pytest.raises(ValueError, match="stacked"):
        ShadowBatch.from_pennylane(bits)
