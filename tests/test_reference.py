"""Huang, Kueng, Preskill reference data (shared/reference/huang2020)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from peer_data import reference_dir

import qsense
from qsense.streaming import reference


@pytest.fixture(scope="module")
def REF() -> Path:
    return reference_dir("huang2020")


@pytest.fixture(scope="module")
def data(REF):
    return reference.read_measurements(REF / "measurement.txt")


def test_matched_ratio_reproduces_reference_observables(REF, data):
    n, obs = reference.read_observables(REF / "observables.txt")
    assert n == data.n == 10 and data.T == 20000
    expected = np.loadtxt(REF / "expected_observables.txt")
    batch_form = qsense.matched_ratio_expval(data, obs)
    np.testing.assert_allclose(batch_form, expected, atol=1e-6, rtol=0)
    est = qsense.ShadowEstimator(obs, method="matched")
    for lo in range(0, data.T, 1500):
        est.update(data[lo : lo + 1500])
    np.testing.assert_allclose(est.estimate().values, expected, atol=1e-6, rtol=0)


def test_entropies_within_statistical_error(REF, data):
    _, subs = reference.read_subsystems(REF / "subsystems.txt")
    expected = np.loadtxt(REF / "expected_subsystem_entropies.txt")
    est = qsense.ShadowPurity(subs)
    est.update(data)
    e = est.entropy()
    # singlet pairs: S2(0,1) = 0 bits, S2(1,2) = 2 bits, ...
    assert np.all(np.abs(e.values - expected) < 3 * e.stderr + 1e-3), (e, expected)
    # subsystem 0-4: the reference prints 1.036, the plain U-statistic about 1.061
    assert e.values[4] == pytest.approx(1.061, abs=0.002)


def test_round_trip_files(tmp_path, REF, data):
    p = tmp_path / "m.txt"
    reference.write_measurements(p, data[:100])
    back = reference.read_measurements(p)
    np.testing.assert_array_equal(back.bases, data.bases[:100])
    np.testing.assert_array_equal(back.outcomes, data.outcomes[:100])
    n, obs = reference.read_observables(REF / "observables.txt")
    reference.write_observables(tmp_path / "o.txt", n, obs)
    assert reference.read_observables(tmp_path / "o.txt")[1] == obs


def test_malformed_files(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_text("2\nX 1 Q 1\n")
    with pytest.raises(ValueError, match="unknown basis letter"):
        reference.read_measurements(p)
    p.write_text("2\nX 1 Z 2\n")
    with pytest.raises(ValueError, match="1 or -1"):
        reference.read_measurements(p)
    p.write_text("2\nX 1 Z\n")
    with pytest.raises(ValueError, match="tokens"):
        reference.read_measurements(p)
    p.write_text("two\n")
    with pytest.raises(ValueError, match="number of qubits"):
        reference.read_measurements(p)
