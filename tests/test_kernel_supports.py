"""The support-grouped shadow kernel gives exactly the per-term kernels' counts:
random supports (repeated, identity, up to all n qubits), T from 0 up, one or
several threads, tables and planes, any wire order."""

from __future__ import annotations

import numpy as np
import pytest

import qsense
import qsense.estimators.kernels as K
from qsense import packing
from qsense.estimators import supports as supports_mod
from qsense.estimators.supports import PARALLEL_MIN_WORK, support_groups
from qsense.pauli import compile_observables, parse_observable


@pytest.fixture
def restore():
    had_jit, had_threads = K._use_jit and K.jit_available(), K.get_threads()
    yield
    K.use_jit(had_jit)
    K.set_threads(had_threads)


def _words(rng, n, M, kmax, supports=None):
    """M random Pauli words; with ``supports`` they are drawn from that few supports."""
    out = []
    for _ in range(M):
        if supports is not None:
            qs = supports[int(rng.integers(len(supports)))]
        else:
            qs = rng.choice(n, int(rng.integers(0, kmax + 1)), replace=False)
        out.append(" ".join(f"{'XYZ'[rng.integers(3)]}{q}" for q in qs) or "I")
    return out


def _brute(bases, outcomes, table, lengths):
    dense = table.dense_codes()
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(int)
    m = np.zeros((len(lengths), table.M), np.int64)
    o = np.zeros_like(m)
    for j in range(table.M):
        sup = dense[j] > 0
        match = np.all(bases[:, sup] == dense[j][sup] - 1, axis=1)
        par = outcomes[:, sup].sum(axis=1) % 2 == 1
        for g in range(len(lengths)):
            s = slice(starts[g], starts[g + 1])
            m[g, j] = match[s].sum()
            o[g, j] = (match[s] & par[s]).sum()
    return m, o


CASES = [
    # (T, n, M, kmax, lengths or None (one segment), few supports)
    (0, 4, 10, 2, None, False),
    (1, 4, 30, 4, None, False),
    (63, 5, 50, 5, None, False),
    (1000, 7, 80, 7, [1, 63, 64, 65, 700, 107], False),
    (5000, 16, 300, 2, None, True),
    (70_000, 6, 40, 3, [70_000 - 10, 10], True),
    (20_000, 65, 120, 9, [64 * 100, 64 * 50, 20_000 - 64 * 150], False),
]


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("threads", [1, 2])
def test_support_kernel_equals_per_term_kernel(restore, monkeypatch, case, threads):
    T, n, M, kmax, lengths, few = CASES[case]
    if threads > 1:  # split even these small jobs over the threads (word ranges and supports)
        monkeypatch.setattr(supports_mod, "PARALLEL_MIN_WORK", 0)
    rng = np.random.default_rng(case * 10 + threads)
    lengths = lengths or [T]
    bases = rng.integers(0, 3, (T, n), dtype=np.uint8)
    outcomes = rng.integers(0, 2, (T, n), dtype=np.uint8)
    supports = [tuple(rng.choice(n, k, replace=False)) for k in (1, 2, 2, min(n, 3))] if few else None
    words = _words(rng, n, M, kmax, supports) + ["I", " ".join(f"Z{q}" for q in range(n))]
    # a wire order that is not the columns' order: the same support reaches the kernel unsorted
    wires = tuple(reversed(range(n)))
    table = compile_observables([parse_observable(w) for w in words], wires)
    K.set_threads(threads)
    K.use_jit(False)
    ref = K.shadow_counts(bases, outcomes, table, lengths)
    K.use_jit(True)
    got = K.shadow_counts(bases, outcomes, table, lengths)
    planes = packing.pack_shadow(bases, outcomes)
    from_planes = K.shadow_counts_packed(planes, T, table, lengths)
    for a in (got, from_planes):
        np.testing.assert_array_equal(a[0], ref[0])
        np.testing.assert_array_equal(a[1], ref[1])
    if T <= 5000:  # the exact counts, independent of every kernel
        bm, bo = _brute(bases, outcomes, table, lengths)  # dense_codes index columns
        np.testing.assert_array_equal(got[0], bm)
        np.testing.assert_array_equal(got[1], bo)


def test_groups_are_distinct_supports():
    rng = np.random.default_rng(7)
    n = 16
    words = _words(rng, n, 1000, 2)
    table = compile_observables([parse_observable(w) for w in words], tuple(range(n)))
    match_idx, sign_idx = K._term_indices(table, n, sign_letter_rows=False)
    g = support_groups(table, match_idx, sign_idx, valid_row=3 * n, zero_row=n)
    supports = {tuple(sorted(q for q in row if q >= 0)) for row in table.support}
    assert g.S == len(supports) <= 1 + 16 + 120
    assert sorted(g.term_id.tolist()) == list(range(table.M))
    sizes = np.diff(g.start)
    assert sizes.sum() == table.M and (sizes > 0).all()
    # every term of a group has the same outcome rows
    for s in range(g.S):
        terms = g.term_id[g.start[s] : g.start[s + 1]]
        cols = {tuple(sorted(q for q in table.support[j] if q >= 0)) for j in terms}
        assert len(cols) == 1 and len(next(iter(cols))) == g.k[s]


def test_large_work_is_split_over_threads_with_identical_estimates(restore):
    """A T=100,000 batch is large work (above PARALLEL_MIN_WORK): 2 threads give the
    estimates of 1 thread bit for bit, and so do 10 streamed batches."""
    rng = np.random.default_rng(11)
    T, n = 100_000, 16
    b = qsense.ShadowBatch(rng.integers(0, 3, (T, n), dtype=np.uint8), rng.integers(0, 2, (T, n), dtype=np.uint8))
    words = _words(rng, n, 1000, 2)
    assert (T // 64) * 600 > PARALLEL_MIN_WORK
    out = {}
    for threads in (1, 2):
        K.set_threads(threads)
        est = qsense.ShadowEstimator(words, groups=10)
        est.update(b)
        stream = qsense.ShadowEstimator(words, groups=10)
        for lo in range(0, T, 10_000):
            stream.update(b[lo : lo + 10_000])
        out[threads] = (est.estimate(), stream.estimate())
    for x, y in zip(out[1], out[2]):
        np.testing.assert_array_equal(x.values, y.values)
        np.testing.assert_array_equal(x.stderr, y.stderr)


def test_threads_setting_is_validated(restore):
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="threads must be a positive integer"):
            K.set_threads(bad)
    K.set_threads(3)
    assert K.get_threads() == 3


@pytest.mark.parametrize("T,n", [(0, 3), (1, 1), (63, 4), (64, 16), (100_001, 16), (3000, 130)])
@pytest.mark.parametrize("threads", [1, 2])
def test_compiled_packer_equals_packing(restore, T, n, threads):
    """The packer the batch path uses gives qsense.packing's planes bit for bit (padding included)."""
    rng = np.random.default_rng(T + n)
    bases = rng.integers(0, 3, (T, n), dtype=np.uint8)
    outcomes = rng.integers(0, 2, (T, n), dtype=np.uint8)
    K.set_threads(threads)
    got = K.pack_tables(bases, outcomes)
    np.testing.assert_array_equal(got, packing.pack_shadow(bases, outcomes))
    packing.check_shadow_planes(got, T)


def test_forked_child_counts_with_its_own_threads(restore):
    """A process forked after the worker pool started (multiprocessing's default on
    Linux) counts large work without hanging on the parent's pool."""
    import multiprocessing as mp

    rng = np.random.default_rng(12)
    T, n = 100_000, 8
    b = qsense.ShadowBatch(rng.integers(0, 3, (T, n), dtype=np.uint8), rng.integers(0, 2, (T, n), dtype=np.uint8))
    words = _words(rng, n, 300, 2)
    K.set_threads(2)
    want = qsense.shadow_expval(b, words)  # starts the pool in this process
    assert K._pool is not None
    ctx = mp.get_context("fork")
    with ctx.Pool(1) as pool:
        got = pool.apply_async(qsense.shadow_expval, (b, words)).get(timeout=60)
    np.testing.assert_array_equal(got, want)
