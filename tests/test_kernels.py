"""The compiled and the NumPy counting kernels agree exactly, on every layout."""

from __future__ import annotations

import numpy as np
import pytest

import qsense
import qsense.estimators.kernels as K
from qsense.pauli import compile_observables, parse_observable


def random_words(rng, n, M, kmax):
    out = []
    for _ in range(M):
        k = int(rng.integers(0, kmax + 1))
        qs = rng.choice(n, k, replace=False)
        out.append(" ".join(f"{'XYZ'[rng.integers(3)]}{q}" for q in qs) or "I")
    return out


@pytest.fixture
def both_kernels():
    had = K._use_jit and K.jit_available()
    yield
    K.use_jit(had)


def test_compiled_kernel_is_available():
    """numba is a dependency: CI must exercise the compiled kernel, not only the fallback."""
    assert K.jit_available()


@pytest.mark.parametrize("lengths", [[1000], [1, 63, 64, 65, 700, 3], [70000, 10], [5] * 40])
def test_jit_equals_numpy_and_brute_force(both_kernels, lengths):
    rng = np.random.default_rng(len(lengths))
    n = 7
    T = sum(lengths)
    bases = rng.integers(0, 3, (T, n), dtype=np.uint8)
    outcomes = rng.integers(0, 2, (T, n), dtype=np.uint8)
    codes = rng.integers(0, 4, (T, n), dtype=np.uint8)
    words = random_words(rng, n, 60, 4)
    table = compile_observables([parse_observable(w) for w in words], tuple(range(n)))
    results = {}
    for jit in (True, False):
        K.use_jit(jit)
        results[jit] = (K.shadow_counts(bases, outcomes, table, lengths), K.bell_counts(codes, table, lengths))
    for a, b in zip(results[True], results[False]):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    # brute force for the shadow counts of the first segment
    L0 = lengths[0]
    dense = table.dense_codes()
    for j in range(table.M):
        sup = dense[j] > 0
        match = np.all(bases[:L0][:, sup] == dense[j][sup] - 1, axis=1)
        par = outcomes[:L0][:, sup].sum(axis=1) % 2
        assert results[True][0][0][0, j] == match.sum()
        assert results[True][0][1][0, j] == (match & (par == 1)).sum()


def test_threads_give_identical_counts(both_kernels):
    rng = np.random.default_rng(3)
    b = qsense.ShadowBatch(rng.integers(0, 3, (5000, 6)), rng.integers(0, 2, (5000, 6)))
    words = random_words(rng, 6, 300, 3)
    ref = qsense.shadow_expval(b, words, k=3)
    try:
        K.set_threads(2)
        np.testing.assert_array_equal(qsense.shadow_expval(b, words, k=3), ref)
    finally:
        K.set_threads(1)


# -- counting from bit planes (qsense.packing) ------------------------------------------
LAYOUTS = [[1], [63], [1000], [64, 128, 37], [64, 1], [70000, 10], [65536 + 64, 5, 7], [128] * 5 + [3], [5, 64], [100, 100]]


def _table(rng, n, M=40, kmax=4):
    return compile_observables([parse_observable(w) for w in random_words(rng, n, M, min(kmax, n))], tuple(range(n)))


@pytest.mark.parametrize("n", [1, 16, 65])
@pytest.mark.parametrize("lengths", LAYOUTS)
def test_counts_from_planes_equal_counts_from_tables(both_kernels, n, lengths):
    """Same integers from the planes as from the uint8 tables, for both kernels; layouts
    whose inner segments are not whole words take the unpacking fallback."""
    from qsense import packing

    rng = np.random.default_rng(n * 1000 + len(lengths) + sum(lengths) % 97)
    T = sum(lengths)
    bases = rng.integers(0, 3, (T, n), dtype=np.uint8)
    outcomes = rng.integers(0, 2, (T, n), dtype=np.uint8)
    codes = rng.integers(0, 4, (T, n), dtype=np.uint8)
    table = _table(rng, n)
    sp, bp = packing.pack_shadow(bases, outcomes), packing.pack_bell(codes)
    assert K.planes_apply(lengths) == (all(x % 64 == 0 for x in lengths[:-1]))
    for jit in (True, False):
        K.use_jit(jit)
        for got, want in (
            (K.shadow_counts_packed(sp, T, table, lengths), K.shadow_counts(bases, outcomes, table, lengths)),
            (K.bell_counts_packed(bp, T, table, lengths), K.bell_counts(codes, table, lengths)),
        ):
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])


def test_counts_from_planes_edge_cases():
    from qsense import packing

    rng = np.random.default_rng(5)
    table = _table(rng, 3)
    empty = K.shadow_counts_packed(packing.pack_shadow(np.zeros((0, 3), np.uint8), np.zeros((0, 3), np.uint8)), 0, table, [0])
    assert empty[0].shape == (1, table.M) and not empty[0].any()
    with pytest.raises(ValueError, match="sum"):
        K.shadow_counts_packed(packing.pack_shadow(np.zeros((5, 3), np.uint8), np.zeros((5, 3), np.uint8)), 5, table, [4])
    assert not K.planes_apply([]) and not K.planes_apply([64, 0, 5])
    # the identity term counts every real record: validity comes from T, padding excluded
    ident = compile_observables([parse_observable("I")], (0, 1))
    planes = packing.pack_shadow(np.zeros((70, 2), np.uint8), np.zeros((70, 2), np.uint8))
    m, o = K.shadow_counts_packed(planes, 70, ident, [64, 6])
    assert m.tolist() == [[64], [6]] and not o.any()


def _estimator_cases():
    import pennylane as qml

    from qsense import BellEstimator, ShadowEstimator, ShadowPurity

    return [
        ("shadow mean", lambda: ShadowEstimator(["X0 Z1", "Y2", "Z0 Z1 Z2", "I"]), "shadow"),
        ("shadow groups", lambda: ShadowEstimator(["X0 Z1", "Y2 Y3", "Z0"], groups=5), "shadow"),
        ("shadow matched", lambda: ShadowEstimator(["X0 X1", "Z3"], method="matched"), "shadow"),
        ("shadow sum", lambda: ShadowEstimator([0.5 * qml.X(0) @ qml.Z(1) + 2 * qml.Z(2), "Y1"]), "shadow"),
        ("purity", lambda: ShadowPurity([[0], [1, 3], [0, 1, 2]]), "shadow"),
        ("bell", lambda: BellEstimator(["X0 X1", "Y2", "Z0 Y1 X3"], purity_subsystems=[[0, 2]]), "bell"),
        ("bell sum", lambda: BellEstimator([qml.X(0) @ qml.X(1) + 0.25 * qml.Z(2)]), "bell"),
        ("bell t2", lambda: BellEstimator(["X0 X1", "Z3"], t2=5.0, purity_subsystems=[[1]]), "bell"),
    ]


def _results(est):
    from qsense import ShadowPurity

    if isinstance(est, ShadowPurity):
        return [est.purity(), est.entropy()]
    out = [est.estimate()]
    if hasattr(est, "purity"):
        out.append(est.purity())
    return out


@pytest.mark.parametrize("case", range(8))
def test_estimators_from_packed_batches_are_identical(case):
    """Estimators fed ``from_packed`` batches give exactly the values, errors and
    counts of the same data as uint8 batches (several batch sizes, multiples of 64
    and not, so both the plane path and its fallback run)."""
    from qsense import BellBatch, ShadowBatch

    name, make, kind = _estimator_cases()[case]
    rng = np.random.default_rng(case)
    n = 4
    sizes = [64, 1000, 128, 4096, 37, 640, 65536 + 3]
    plain, packed = make(), make()
    for T in sizes:
        if kind == "shadow":
            b = ShadowBatch(rng.integers(0, 3, (T, n)), rng.integers(0, 2, (T, n)), t=rng.random(T))
            p = ShadowBatch.from_packed(ShadowBatch(b.bases, b.outcomes).packed(), T, t=b.t)
        else:
            b = BellBatch(rng.integers(0, 4, (T, n)), wait=rng.random(T))
            p = BellBatch.from_packed(BellBatch(b.outcomes).packed(), T, wait=b.wait)
        plain.update(b)
        packed.update(p)
    for x, y in zip(_results(plain), _results(packed)):
        np.testing.assert_array_equal(x.values, y.values)
        np.testing.assert_array_equal(x.stderr, y.stderr)
        assert x.count == y.count


def test_counting_estimators_do_not_unpack():
    from qsense import BellBatch, BellEstimator, ShadowBatch, ShadowEstimator, ShadowPurity, concatenate

    rng = np.random.default_rng(9)
    src = ShadowBatch(rng.integers(0, 3, (4096, 6)), rng.integers(0, 2, (4096, 6)))
    parts = [ShadowBatch.from_packed(src[i : i + 1024].packed(), 1024) for i in range(0, 4096, 1024)]
    batch = concatenate(parts)  # whole-word planes join without unpacking
    for est in (ShadowEstimator(["X0 Z1", "Y5"]), ShadowEstimator(["Z2"], method="matched"), ShadowPurity([[0, 1]])):
        est.update(batch)
    assert not batch.has_tables
    ref = ShadowEstimator(["X0 Z1", "Y5"])
    ref.update(src)
    est = ShadowEstimator(["X0 Z1", "Y5"])
    est.update(batch)
    np.testing.assert_array_equal(est.estimate().values, ref.estimate().values)
    bell = BellBatch.from_packed(BellBatch(rng.integers(0, 4, (1000, 3))).packed(), 1000)
    BellEstimator(["X0 Y1", "Z2"], purity_subsystems=[[0, 1]]).update(bell)
    assert not bell.has_tables
    # median of means whose segments are not whole words: falls back to the tables, same counts
    qsense.shadow_expval(batch, ["X0", "Z1 Z2"], k=3)
    assert batch.has_tables
