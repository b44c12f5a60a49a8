"""Large-subsystem purity: the sparse class counts and pair kernel equal the dense
histogram path and the brute-force pair sum, many subsystems in one pass, checkpoints,
and error bars that match the run-to-run spread."""

from __future__ import annotations

import numpy as np
import pytest

from qsense import ShadowBatch, ShadowPurity, sims
from qsense.estimators.class_kernels import ClassCounts, class_keys, pair_row_sums, pauli_row_sums
from qsense.estimators.purity import _G, MAX_SUBSYSTEM, _apply, class_kernel, u_statistic, window_subsystems
from qsense.estimators.serial import dump_npz
from qsense.sims import exact


def brute(b: ShadowBatch, sub) -> float:
    cls = 2 * b.bases[:, sub].astype(int) + b.outcomes[:, sub]
    g = class_kernel()
    K = np.ones((b.T, b.T))
    for j in range(len(sub)):
        K *= g[cls[:, j][:, None], cls[:, j][None, :]]
    np.fill_diagonal(K, 0)
    return K.sum() / (b.T * (b.T - 1))


def dense_reference(b: ShadowBatch, sub) -> tuple[float, float]:
    """The pre-sparse estimator: the full 6^|A| histogram and tensor contractions."""
    m = len(sub)
    keys = class_keys(2 * b.bases[:, sub].astype(np.int64) + b.outcomes[:, sub])
    h = np.bincount(keys, minlength=6**m).astype(np.float64)
    nz = np.flatnonzero(h)
    return u_statistic(h[nz], _apply(h, _G, m)[nz], float(h[nz] @ _apply(h, _G**2, m)[nz]), 5.0**m, b.T)


def random_batch(T: int, n: int, seed: int) -> ShadowBatch:
    rng = np.random.default_rng(seed)
    return ShadowBatch(rng.integers(0, 3, (T, n)), rng.integers(0, 2, (T, n)))


@pytest.mark.parametrize("m", [7, 8])
def test_sparse_pair_kernel_equals_the_dense_histogram_path(m):
    """Where both run (|A| <= 9; 9 itself takes the dense path 6 s), value and error bar
    agree to rounding."""
    psi = sims.random_circuit_state(9, 3, seed=m)
    b = sims.sample_shadows(psi, 1500, seed=m)
    sub = list(range(9 - m, 9))
    counts = ClassCounts(m)
    counts.add_keys(class_keys(2 * b.bases[:, sub].astype(np.int64) + b.outcomes[:, sub]))
    hh, r1, hr2 = pair_row_sums(counts)
    sparse = u_statistic(hh, r1, hr2, 5.0**m, b.T)
    dense = dense_reference(b, sub)
    np.testing.assert_allclose(sparse, dense, rtol=1e-10, atol=1e-12)
    est = ShadowPurity([sub])
    est.update(b[:700])
    est.update(b[700:])
    p = est.purity()
    np.testing.assert_allclose([p.values[0], p.stderr[0]], dense, rtol=1e-10, atol=1e-12)
    # the Pauli route: the same value and G h, an error bar within sampling noise
    hp, r1p, hr2p = pauli_row_sums(counts)
    np.testing.assert_allclose(r1p, r1, rtol=1e-10, atol=1e-9 * np.abs(r1).max())
    pauli = u_statistic(hp, r1p, hr2p, 5.0**m, b.T)
    assert pauli[0] == pytest.approx(dense[0], rel=1e-10, abs=1e-12)
    assert pauli[1] == pytest.approx(dense[1], rel=0.1)


@pytest.mark.parametrize("m", [12, 16])
def test_pair_kernel_equals_brute_force_pair_sum(m):
    b = random_batch(400, 16, seed=m)
    sub = list(range(16 - m, 16))[::-1]  # any order of the qubits
    est = ShadowPurity([sub])
    est.update(b)
    assert est.purity().values[0] == pytest.approx(brute(b, sub), rel=1e-10, abs=1e-9)
    # memory holds the distinct classes seen, never 6^|A|
    assert est.class_counts(0).distinct == len(np.unique(2 * b.bases[:, sub] + b.outcomes[:, sub], axis=0))


@pytest.mark.slow
def test_sixteen_qubit_purity_of_a_pure_state_is_unbiased():
    """|A| = 16 on a 16-qubit random-circuit pure state (purity 1): 12 runs of 2,000
    snapshots; the mean lies within 4 standard errors of 1 and the reported bars agree
    with the spread within a factor 2 (12 runs)."""
    psi = sims.random_circuit_state(16, 2, seed=4)
    sampler = sims.ShadowSampler(psi)
    vals, ses = [], []
    for s in range(12):
        est = ShadowPurity([tuple(range(16))])
        est.update(sampler.sample(2000, seed=s))
        p = est.purity()
        vals.append(p.values[0])
        ses.append(p.stderr[0])
    vals = np.array(vals)
    assert abs(vals.mean() - 1.0) < 4 * vals.std(ddof=1) / np.sqrt(len(vals))
    assert 0.5 < np.mean(ses) / vals.std(ddof=1) < 2.0


@pytest.mark.slow
def test_error_bars_match_the_spread_on_the_sparse_path():
    """|A| = 8 (sparse counts, pair kernel) of a 9-qubit mixed state from 1,500 snapshots,
    150 runs: unbiased (mean within 4 standard errors of the exact purity) and the mean
    reported error equals the run-to-run spread within 20%; 2-sigma bars cover >= 90%."""
    rho = sims.random_mixed_state(8, 0.6, seed=3)
    truth = float(exact.exact_purity(rho, [tuple(range(8))])[0])
    sampler = sims.ShadowSampler(rho)
    vals, ses = [], []
    for s in range(150):
        est = ShadowPurity([tuple(range(8))])
        est.update(sampler.sample(1500, seed=s))
        p = est.purity()
        vals.append(p.values[0])
        ses.append(p.stderr[0])
    vals, ses = np.array(vals), np.array(ses)
    assert abs(vals.mean() - truth) < 4 * vals.std() / np.sqrt(len(vals)), (vals.mean(), truth)
    assert 0.8 < ses.mean() / vals.std() < 1.2, ses.mean() / vals.std()
    assert np.mean(np.abs(vals - truth) <= 2 * ses) >= 0.9


def test_windows_in_one_pass():
    b = random_batch(600, 6, seed=1)
    est = ShadowPurity("windows:1..3")
    assert est.labels == ()
    est.update(b[:250])
    est.update(b[250:])
    subs = window_subsystems(6, range(1, 4))
    assert est.subsystems == subs and len(subs) == 6 + 5 + 4
    one = ShadowPurity(subs)
    one.update(b)
    np.testing.assert_array_equal(est.purity().values, one.purity().values)
    back = ShadowPurity.from_bytes(est.to_bytes())
    np.testing.assert_array_equal(back.purity().values, one.purity().values)
    a, c = ShadowPurity("windows:1..3"), ShadowPurity("windows:1..3")
    a.update(b[:100])
    c.update(b[100:])
    np.testing.assert_allclose(a.merge(c).purity().values, one.purity().values, rtol=1e-12)
    # windows of 12..16 on 16 qubits, also in one pass
    big = ShadowPurity("windows:12..16")
    big.update(random_batch(300, 16, seed=2))
    assert len(big.purity().values) == 5 + 4 + 3 + 2 + 1


def test_sparse_checkpoint_merge_and_version_1():
    b = random_batch(900, 12, seed=3)
    subs = [tuple(range(12)), (0, 3, 5, 7, 9, 11, 1)]
    whole = ShadowPurity(subs)
    whole.update(b)
    a, c = ShadowPurity(subs), ShadowPurity(subs)
    a.update(b[:450])
    c.update(b[450:])
    back = ShadowPurity.from_bytes(a.to_bytes()).merge(ShadowPurity.from_bytes(c.to_bytes()))
    np.testing.assert_allclose(back.purity().values, whole.purity().values, rtol=1e-12)
    np.testing.assert_allclose(back.purity().stderr, whole.purity().stderr, rtol=1e-10)
    # a version-1 checkpoint (dense histogram of a 7-qubit subsystem) still loads
    sub = (0, 1, 2, 3, 4, 5, 6)
    keys = class_keys(2 * b.bases[:, list(sub)].astype(np.int64) + b.outcomes[:, list(sub)])
    v1 = dump_npz({"type": "ShadowPurity", "version": 1, "subsystems": [list(sub)], "wires": list(range(12)),
                   "count": b.T}, h0=np.bincount(keys, minlength=6**7))
    ref = ShadowPurity([sub])
    ref.update(b)
    assert ShadowPurity.from_bytes(v1).purity().values[0] == pytest.approx(ref.purity().values[0], rel=1e-12)


def test_bad_input():
    for spec in ("windows", "windows:a..3", "windows:0..3", f"windows:1..{MAX_SUBSYSTEM + 1}", "all"):
        with pytest.raises(ValueError, match="windows|subsystems"):
            ShadowPurity(spec)
    est = ShadowPurity("windows:1..8")
    with pytest.raises(ValueError, match="do not fit"):
        est.update(random_batch(10, 5, seed=0))
    with pytest.raises(ValueError, match="method"):
        ShadowPurity([(0,)], method="fast")
    with pytest.raises(ValueError, match="different subsystems"):
        ShadowPurity([(0, 1)]).merge(ShadowPurity("windows:1..2"))
    with pytest.raises(ValueError, match="class counts"):
        ClassCounts.from_arrays(3, np.array([5, 2]), np.array([1, 1]))


def test_malformed_checkpoints_are_value_errors():
    meta = {"type": "ShadowPurity", "version": 2, "method": "u", "spec": None, "subsystems": [list(range(7))],
            "wires": list(range(7)), "count": 3}
    keys, counts = np.array([1, 5, 9]), np.array([1, 1, 1])
    assert ShadowPurity.from_bytes(dump_npz(meta, k0=keys, c0=counts)).count == 3
    for arrays, match in [
        ({"k0": keys.astype(float), "c0": counts}, "integers"),
        ({"k0": keys, "c0": -counts}, "negative"),
        ({"k0": keys[::-1], "c0": counts}, "sorted"),
        ({"k0": keys, "c0": counts[:2]}, "shape"),
        ({"k0": keys}, "lacks"),
    ]:
        with pytest.raises(ValueError, match=match):
            ShadowPurity.from_bytes(dump_npz(meta, **arrays))
    with pytest.raises(ValueError, match="count"):
        ShadowPurity.from_bytes(dump_npz({**meta, "count": "3"}, k0=keys, c0=counts))
    with pytest.raises(ValueError, match="malformed|subsystem"):
        ShadowPurity.from_bytes(dump_npz({**meta, "subsystems": 7}, k0=keys, c0=counts))
