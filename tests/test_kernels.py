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
