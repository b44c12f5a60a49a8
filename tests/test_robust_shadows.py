"""Noise-robust shadows: calibration on |0...0> under bit-flip-before-measurement and
depolarizing noise recovers the exact noiseless Pauli values and purities, with error
bars (calibration included) that cover at the stated rate."""

from __future__ import annotations

import numpy as np
import pennylane as qml
import pytest
from exact import expval, random_density

from qsense import ShadowBatch, ShadowPurity, sims
from qsense.estimators.robust import CalibrationError, NoiseCalibration, RobustShadowEstimator, robust_purity
from qsense.sims import channels, exact

N_QUBITS = 3
ZERO = np.zeros((2**N_QUBITS, 2**N_QUBITS))
ZERO[0, 0] = 1.0
OBS = ["XII", "IZI", "IIY", "ZZI", "XIY", "YZX"]


def bit_flips(batch: ShadowBatch, p, seed: int) -> ShadowBatch:
    """Readout bit flips with per-qubit probabilities p (the bit flips before the measurement)."""
    rng = np.random.default_rng(seed)
    flips = (rng.random(batch.outcomes.shape) < np.asarray(p)[None, :]).astype(np.uint8)
    return ShadowBatch(batch.bases, batch.outcomes ^ flips, batch.wires)


def correlated_flips(batch: ShadowBatch, p: float, seed: int) -> ShadowBatch:
    """Qubits 0 and 1 flip together with probability p (correlated readout noise)."""
    rng = np.random.default_rng(seed)
    both = (rng.random(batch.T) < p).astype(np.uint8)
    out = batch.outcomes.copy()
    out[:, 0] ^= both
    out[:, 1] ^= both
    return ShadowBatch(batch.bases, out, batch.wires)


@pytest.fixture(scope="module")
def rho():
    return random_density(N_QUBITS, np.random.default_rng(21), rank=2)


@pytest.mark.slow
def test_bit_flip_readout_noise_is_corrected_with_honest_error_bars(rho):
    """Per-qubit bit flips 0.05 / 0.10 / 0.15; 80 seeds of 3,000 data and 1,500 calibration
    snapshots.  The raw estimates are biased (weight 3 shrunk by 0.63); the corrected
    ones are unbiased and their 1 and 2 sigma bars cover 68% / 95% of the truth."""
    p = [0.05, 0.10, 0.15]
    truth = np.array([expval(rho, o) for o in OBS])
    z, raw_bias = [], []
    for s in range(80):
        cal = NoiseCalibration()
        cal.update(bit_flips(sims.sample_shadows(ZERO, 1500, seed=1000 + s), p, 2000 + s))
        data = bit_flips(sims.sample_shadows(rho, 3000, seed=s), p, 3000 + s)
        est = RobustShadowEstimator(OBS, cal)
        est.update(data[:1000])
        est.update(data[1000:])
        e = est.estimate()
        z.append((e.values - truth) / e.stderr)
        plain = RobustShadowEstimator(OBS, cal).data
        plain.update(data)
        raw_bias.append(plain.estimate().values - truth)
    z = np.array(z)
    assert abs(z.mean()) < 4 / np.sqrt(z.size) * z.std()  # unbiased
    assert 0.62 < np.mean(np.abs(z) <= 1) < 0.75
    assert np.mean(np.abs(z) <= 2) > 0.93
    # the noise is real: the uncorrected weight-3 term is off by (1 - 0.9*0.8*0.7) of its value
    assert abs(np.mean(raw_bias, axis=0)[5] + (1 - 0.9 * 0.8 * 0.7) * truth[5]) < 0.02


def test_depolarizing_noise_purity_is_corrected(rho):
    """Depolarizing p = 0.2 on every qubit before the measurement (sims.channels, on the data
    and on the calibration state alike): the corrected purities match the exact noiseless
    ones within their error bars (40 seeds), the raw ones do not."""
    dep = channels.depolarizing(0.2)
    noisy, noisy_zero = channels.apply_channel(rho, dep), channels.apply_channel(ZERO, dep)
    subs = [(0,), (0, 2), (0, 1, 2)]
    truth = exact.exact_purity(rho, subs)
    z, raw = [], []
    for s in range(40):
        cal = NoiseCalibration()
        cal.update(sims.sample_shadows(noisy_zero, 3000, seed=500 + s))
        est = ShadowPurity(subs)
        est.update(sims.sample_shadows(noisy, 3000, seed=s))
        r = robust_purity(est, cal)
        z.append((r.values - truth) / r.stderr)
        raw.append(est.purity().values)
    z = np.array(z)
    assert abs(z.mean()) < 4 * z.std() / np.sqrt(z.size)
    assert np.mean(np.abs(z) <= 2) > 0.9 and 0.55 < np.mean(np.abs(z) <= 1) < 0.8
    assert np.all(np.mean(raw, axis=0) < truth - 0.02)  # noise lowers the raw purities


def test_calibration_variance_is_in_the_error_bar(rho):
    """With only 200 calibration snapshots the calibration dominates the error of a
    weight-3 term (XXY, the largest, 0.49): the error bar grows accordingly, and still
    covers (60 seeds)."""
    p = [0.1, 0.1, 0.1]
    truth = expval(rho, "XXY")
    z, ratio = [], []
    for s in range(60):
        data = bit_flips(sims.sample_shadows(rho, 20000, seed=s), p, 7000 + s)
        small, large = NoiseCalibration(), NoiseCalibration()
        small.update(bit_flips(sims.sample_shadows(ZERO, 200, seed=100 + s), p, 200 + s))
        large.update(bit_flips(sims.sample_shadows(ZERO, 20000, seed=300 + s), p, 400 + s))
        a, b = RobustShadowEstimator(["XXY"], small), RobustShadowEstimator(["XXY"], large)
        a.update(data)
        b.update(data)
        ea = a.estimate()
        z.append((ea.values[0] - truth) / ea.stderr[0])
        ratio.append(ea.stderr[0] / b.estimate().stderr[0])
    assert np.median(ratio) > 1.2
    assert np.mean(np.abs(np.array(z)) <= 2) > 0.9


def test_correlated_readout_needs_the_subset_model(rho):
    """Qubits 0 and 1 flip together (p = 0.15): f_{01} = 1 although f_0 = f_1 = 0.7, so the
    product model over-corrects two-qubit terms on (0, 1) while the subset model does not."""
    truth = np.array([expval(rho, o) for o in ("ZZI", "XYI", "XII")])
    cal = NoiseCalibration()
    cal.update(correlated_flips(sims.sample_shadows(ZERO, 40000, seed=1), 0.15, 2))
    data = correlated_flips(sims.sample_shadows(rho, 40000, seed=3), 0.15, 4)
    fs, _ = cal.f_subset([(0,), (1,), (0, 1)])
    assert fs == pytest.approx([0.7, 0.7, 1.0], abs=0.03)
    subset = RobustShadowEstimator(["ZZI", "XYI", "XII"], cal, model="subset")
    subset.update(data)
    e = subset.estimate()
    assert np.all(np.abs(e.values - truth) < 4 * e.stderr)
    qubit = RobustShadowEstimator(["ZZI", "XYI", "XII"], cal, model="qubit")
    qubit.update(data)
    q = qubit.estimate()
    big = np.argmax(np.abs(truth[:2]))
    assert abs(q.values[big] / truth[big] - 1 / 0.49) < 0.3  # divided by 0.7^2 instead of 1


def test_calibration_merge_and_checkpoint():
    a, b, whole = NoiseCalibration(), NoiseCalibration(), NoiseCalibration()
    batch = bit_flips(sims.sample_shadows(ZERO, 2000, seed=9), [0.1, 0.2, 0.0], 10)
    a.update(batch[:700])
    b.update(batch[700:])
    whole.update(batch)
    back = NoiseCalibration.from_bytes(a.to_bytes()).merge(NoiseCalibration.from_bytes(b.to_bytes()))
    np.testing.assert_allclose(back.f_qubit()[0], whole.f_qubit()[0], rtol=1e-12)
    np.testing.assert_allclose(back.f_qubit()[1], whole.f_qubit()[1], rtol=1e-10)
    assert back.count == 2000
    # noiseless |000>: every f_q is 1 up to the calibration's noise, f_q for a perfect qubit 2 is exactly 1
    assert whole.f_qubit()[0][2] == pytest.approx(1.0, abs=0.15)


def test_bad_input(rho):
    cal = NoiseCalibration()
    with pytest.raises(CalibrationError, match="model"):
        RobustShadowEstimator(["XII"], cal, model="global")
    with pytest.raises(CalibrationError, match="Pauli words"):
        RobustShadowEstimator([0.5 * qml.X(0) + qml.Z(1)], cal)
    with pytest.raises(CalibrationError, match="NoiseCalibration"):
        RobustShadowEstimator(["XII"], object())
    est = RobustShadowEstimator(["XII"], cal)
    with pytest.raises(CalibrationError, match="no data"):
        est.estimate()
    est.update(sims.sample_shadows(rho, 100, seed=0))
    with pytest.raises(CalibrationError, match="wires"):
        est.estimate()
    cal.update(sims.sample_shadows(ZERO, 500, seed=0, wires=["a", "b", "c"]))
    with pytest.raises(CalibrationError, match="wires"):
        est.estimate()
    flat = ShadowBatch(np.full((10, 3), 2), np.tile([0, 1], 5)[:, None] * np.array([[1, 0, 0]]))
    dead2 = NoiseCalibration()
    dead2.update(flat)  # qubit 0 reads 0 and 1 equally often in Z: f_0 = 0 exactly
    est2 = RobustShadowEstimator(["XII"], dead2)
    est2.update(sims.sample_shadows(rho, 100, seed=0))
    with pytest.raises(CalibrationError, match="no signal"):
        est2.estimate()
    with pytest.raises(CalibrationError, match="seen data"):
        robust_purity(ShadowPurity([(0,)]), dead2)
    assert issubclass(CalibrationError, ValueError)


def test_pennylane_default_mixed_depolarizing_before_the_measurement():
    """A real PennyLane simulator: default.mixed with DepolarizingChannel(0.2) on every wire
    right before qml.classical_shadow (so before the random rotations and the readout; the
    channel commutes with them).  The corrected values of cos(0.45)|00> + sin(0.45)|11>
    match the exact noiseless ones, the raw ones are shrunk by f = 1 - 4p/3 per qubit."""
    dev = qml.device("default.mixed", wires=2, seed=17)

    @qml.set_shots(shots=4000)
    @qml.qnode(dev)
    def circuit(prepare):
        if prepare:
            qml.RY(0.9, 0)
            qml.CNOT([0, 1])
        for w in range(2):
            qml.DepolarizingChannel(0.2, wires=w)
        return qml.classical_shadow(wires=range(2))

    obs = ["ZZ", "XX", "YY", "ZI", "IX"]
    truth = np.array([1.0, np.sin(0.9), -np.sin(0.9), np.cos(0.9), 0.0])
    z, raw = [], []
    for _ in range(8):
        cal = NoiseCalibration()
        cal.update(ShadowBatch.from_pennylane(*(np.asarray(a, dtype=np.int64) for a in circuit(False))))
        data = ShadowBatch.from_pennylane(*(np.asarray(a, dtype=np.int64) for a in circuit(True)))
        est = RobustShadowEstimator(obs, cal)
        est.update(data)
        e = est.estimate()
        z.append((e.values - truth) / e.stderr)
        raw.append(est.data.estimate().values)
        pur = ShadowPurity([(0,), (0, 1)])
        pur.update(data)
        rp = robust_purity(pur, cal)
        z.append((rp.values - np.array([(1 + np.cos(0.9) ** 2) / 2, 1.0])) / rp.stderr)
    z = np.concatenate(z)
    assert np.all(np.abs(z) < 4) and abs(z.mean()) < 4 / np.sqrt(z.size), z
    f = 1 - 4 * 0.2 / 3
    np.testing.assert_allclose(np.mean(raw, axis=0)[:3], truth[:3] * f**2, atol=0.06)


def test_corrected_kernels_reduce_to_the_plain_ones_without_noise():
    """f = 1 gives back the 5 / -4 / 1/2 kernel on both the dense and the sparse path."""
    from qsense.estimators.class_kernels import ClassCounts, class_keys, pair_row_sums
    from qsense.estimators.robust import _kernels, _row_sums

    rng = np.random.default_rng(3)
    for m in (3, 7):
        cls = 2 * rng.integers(0, 3, (800, m)) + rng.integers(0, 2, (800, m))
        counts = ClassCounts(m)
        counts.add_keys(class_keys(cls))
        _, r1, hr2 = _row_sums(counts, _kernels(np.ones(m)))
        _, q1, q2 = pair_row_sums(counts)
        np.testing.assert_allclose(r1, q1, rtol=1e-12)
        assert hr2 == pytest.approx(q2, rel=1e-12)
