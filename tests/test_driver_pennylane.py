"""The PennyLane driver on real PennyLane devices (no mocks): both modes agree with
each other and with the exact state, parameters change mid-stream, pacing,
totals, sequence numbers and clean cancellation."""

from __future__ import annotations

import asyncio
import math
import time

import numpy as np
import pennylane as qml
import pytest

import qsense
from qsense import sims
from qsense.drivers.pennylane_device import PennyLaneDriver

LABELS = ["ZZI", "XXI", "IYZ", "XIX", "ZIZ"]


def prep(theta):
    qml.RY(theta, 0)
    qml.CNOT([0, 1])
    qml.RX(0.3, 1)
    qml.RY(0.5, 2)
    qml.CNOT([1, 2])


def noisy_prep(theta):
    prep(theta)
    qml.DepolarizingChannel(0.15, wires=1)
    qml.AmplitudeDamping(0.2, wires=2)


def exact_rho(qfunc, theta, wires=(0, 1, 2)):
    dev = qml.device("default.mixed", wires=len(wires))

    @qml.qnode(dev)
    def c():
        qfunc(theta)
        return qml.density_matrix(wires=list(wires))

    return np.asarray(c())


def exact_paulis(rho, labels):
    v = sims.pauli_vector(rho)
    all_labels = qsense.pauli_square_labels(int(math.log2(rho.shape[0])))
    return np.array([v[all_labels.index(lab)] for lab in labels])


async def run(driver):
    return qsense.concatenate(await driver.collect())


def shadow_estimate(batch, labels=LABELS):
    e = qsense.ShadowEstimator(labels)
    e.update(batch)
    return e.estimate()


def bell_estimate(batch, labels=LABELS):
    e = qsense.BellEstimator(labels)
    e.update(batch)
    r, p = e.estimate(), e.purity()
    return np.r_[r.values, p.values], np.r_[r.stderr, p.stderr]


def consistent(a, sa, b, sb, z=4.5):
    return np.all(np.abs(np.asarray(a) - np.asarray(b)) <= z * np.sqrt(np.asarray(sa) ** 2 + np.asarray(sb) ** 2) + 1e-12)


@pytest.mark.parametrize(
    "devname,qfunc",
    [("default.qubit", prep), ("lightning.qubit", prep), ("default.mixed", noisy_prep)],
)
async def test_shadow_modes_agree(devname, qfunc):
    theta = 0.9
    rho = exact_rho(qfunc, theta)
    exact = exact_paulis(rho, LABELS)
    res = {}
    for mode in ("state", "device"):
        dev = qml.device(devname, wires=3, seed=11)
        drv = PennyLaneDriver(qfunc, dev, kind="shadow", mode=mode, params=(theta,), batch_size=4000, total=12_000, seed=3)
        b = await run(drv)
        assert b.T == 12_000 and b.wires == (0, 1, 2)
        r = shadow_estimate(b)
        assert consistent(r.values, r.stderr, exact, 0 * exact), (mode, r, exact)
        res[mode] = r
    assert consistent(res["state"].values, res["state"].stderr, res["device"].values, res["device"].stderr)


@pytest.mark.parametrize(
    "devname,qfunc",
    [("default.qubit", prep), ("lightning.qubit", prep), ("default.mixed", noisy_prep)],
)
async def test_bell_modes_agree(devname, qfunc):
    theta = 0.9
    rho = exact_rho(qfunc, theta)
    exact = np.r_[exact_paulis(rho, LABELS) ** 2, np.trace(rho @ rho).real]
    res = {}
    for mode in ("state", "device"):
        dev = qml.device(devname, wires=3 if mode == "state" else 6, seed=12)
        drv = PennyLaneDriver(qfunc, dev, kind="bell", mode=mode, params=(theta,), batch_size=5000, total=15_000, seed=4)
        b = await run(drv)
        assert isinstance(b, qsense.BellBatch) and b.T == 15_000 and b.n == 3
        v, s = bell_estimate(b)
        assert consistent(v, s, exact, 0 * exact), (mode, v, exact)
        res[mode] = (v, s)
    assert consistent(*res["state"], *res["device"])
    if qfunc is noisy_prep:
        assert res["device"][0][-1] < 0.9  # the purity estimate sees the noise


async def test_rotation_fallback_and_native_agree():
    theta = 0.4
    exact = exact_paulis(exact_rho(prep, theta), LABELS)
    for method in ("native", "rotations"):
        dev = qml.device("default.qubit", seed=5)
        drv = PennyLaneDriver(prep, dev, mode="device", shadow_method=method, params=(theta,), batch_size=3000, total=9000, seed=1)
        r = shadow_estimate(await run(drv))
        assert consistent(r.values, r.stderr, exact, 0 * exact), (method, r)
    # lightning.qubit rejects classical_shadow: "auto" falls back to rotations
    dev = qml.device("lightning.qubit", wires=3, seed=5)
    drv = PennyLaneDriver(prep, dev, mode="device", params=(theta,), batch_size=3000, total=3000, seed=1)
    await run(drv)
    assert drv._native_ok is False


async def test_set_params_mid_stream_and_seq():
    """RX(theta) on one qubit: theta = 0 gives Z-basis bit 0, theta = pi gives 1."""

    def flip(theta):
        qml.RX(theta, 0)

    for mode in ("state", "device"):
        dev = qml.device("default.qubit", wires=1, seed=2)
        drv = PennyLaneDriver(flip, dev, mode=mode, params=(0.0,), batch_size=500, total=3000, seed=7, source="flip", seq0=10)
        seen = []
        async for b in drv:
            z = b.outcomes[b.bases[:, 0] == 2, 0]
            seen.append((b.seq, b.source, int(z.min()), int(z.max())))
            if len(seen) == 3:
                drv.set_params(math.pi)
        assert [s[0] for s in seen] == list(range(10, 16))
        assert all(s[1] == "flip" for s in seen)
        assert all(s[2:] == (0, 0) for s in seen[:3]) and all(s[2:] == (1, 1) for s in seen[3:]), seen


async def test_params_as_function_of_time_simulated_clock():
    """A step in theta at t = 1 s on a simulated clock (rate set, realtime=False)."""

    def flip(theta):
        qml.RX(theta, 0)

    dev = qml.device("default.qubit", wires=1)
    drv = PennyLaneDriver(
        flip, dev, params=lambda t: (0.0 if t < 1.0 else math.pi,), batch_size=250, total=2000, rate=1000.0, realtime=False, seed=1
    )
    t0 = time.perf_counter()
    batches = await drv.collect()
    assert time.perf_counter() - t0 < 5.0  # no sleeping on the simulated clock
    b = qsense.concatenate(batches)
    np.testing.assert_allclose(b.t, np.arange(2000) / 1000.0)
    z = b.bases[:, 0] == 2
    early, late = b.t < 1.0, b.t >= 1.0
    assert np.all(b.outcomes[z & early, 0] == 0) and np.all(b.outcomes[z & late, 0] == 1)


async def test_rate_limit_and_total():
    dev = qml.device("default.qubit", wires=2)
    drv = PennyLaneDriver(prep_two, dev, batch_size=200, total=900, rate=2000.0, seed=1, time_origin=100.0)
    t0 = time.perf_counter()
    batches = await drv.collect()
    elapsed = time.perf_counter() - t0
    assert [b.T for b in batches] == [200, 200, 200, 200, 100]
    assert elapsed >= 0.40  # 900 records at 2000/s: the last batch waits until 0.45 s
    b = qsense.concatenate(batches)
    np.testing.assert_allclose(b.t, 100.0 + np.arange(900) / 2000.0)
    assert drv.produced == 900


def prep_two():
    qml.Hadamard(0)
    qml.CNOT([0, 1])


async def test_cancellation_leaves_no_tasks():
    dev = qml.device("default.qubit", wires=2)
    drv = PennyLaneDriver(prep_two, dev, batch_size=100, rate=1000.0, seed=1)  # endless
    got = []

    async def consume():
        async for b in drv:
            got.append(b)

    before = asyncio.all_tasks()
    task = asyncio.create_task(consume())
    await asyncio.sleep(0.35)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.05)
    assert asyncio.all_tasks() == before
    assert 2 <= len(got) <= 6
    # leaving the loop early closes the generator; stop() ends a stream cleanly
    drv2 = PennyLaneDriver(prep_two, dev, batch_size=50, seed=1)
    n = 0
    async for b in drv2:
        n += 1
        if n == 3:
            drv2.stop()
    assert n == 3 and drv2.seq == 3


async def test_qnode_custom_wires_and_reduced_state():
    dev = qml.device("default.qubit", wires=["a", "b", "anc"], seed=3)

    @qml.qnode(dev)
    def circuit(x):
        qml.Hadamard("anc")
        qml.CRY(x, wires=["anc", "a"])
        qml.CNOT(["a", "b"])
        return qml.expval(qml.Z("a"))  # ignored by the driver

    x = 1.3
    # exact reduced state of (a, b)
    ref = qml.device("default.qubit", wires=["a", "b", "anc"])

    @qml.qnode(ref)
    def rdm():
        for op in qml.tape.make_qscript(circuit.func)(x).operations:
            qml.apply(op)
        return qml.density_matrix(wires=["a", "b"])

    rho = np.asarray(rdm())
    labels = ["Z0 Z1", "X0 X1", "Z0"]
    exact = np.array([np.trace(rho @ np.kron(np.diag([1, -1]), np.diag([1, -1]))).real,
                      np.trace(rho @ np.kron(np.array([[0, 1], [1, 0]]), np.array([[0, 1], [1, 0]]))).real,
                      np.trace(rho @ np.kron(np.diag([1, -1]), np.eye(2))).real])
    drv = PennyLaneDriver(circuit, wires=["a", "b"], params=(x,), batch_size=10_000, total=20_000, seed=2)
    b = await run(drv)
    assert b.wires == ("a", "b")
    r = shadow_estimate(b, labels)
    assert consistent(r.values, r.stderr, exact, 0 * exact), (r, exact)
    assert drv._sampler is not None and drv._sampler.density  # reduced state: density matrix path


async def test_bell_device_mode_needs_two_copies_of_wires():
    dev = qml.device("lightning.qubit", wires=3)
    drv = PennyLaneDriver(prep, dev, kind="bell", mode="device", params=(0.1,), batch_size=10, total=10)
    with pytest.raises(ValueError, match="2n"):
        await drv.collect()


def test_constructor_validation():
    dev = qml.device("default.qubit")
    for bad in (dict(kind="x"), dict(mode="x"), dict(batch_size=0), dict(total=-1), dict(rate=0.0), dict(seq0=-2)):
        with pytest.raises(ValueError):
            PennyLaneDriver(prep, dev, **bad)
    with pytest.raises(ValueError):
        PennyLaneDriver(prep)  # no device


def test_example_script_runs():
    """examples/pennylane_ghz_shadows.py runs end to end (both modes) and its
    estimates agree with the exact values."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "pennylane_ghz_shadows.py"
    out = subprocess.run(
        [sys.executable, str(script), "--n", "3", "--shots", "3000", "--batch", "1000", "--mode", "device", "--phases", "0.2"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    assert "phi = 0.2000" in out and "purity" in out
    worst = float(out.rsplit("largest deviation:", 1)[1].split()[0])
    assert worst < 5.0, out


def test_sample_records_is_synchronous_and_unbiased():
    import pennylane as qml

    import qsense
    from qsense import sims
    from qsense.drivers.pennylane_device import sample_records

    dev = qml.device("default.qubit", wires=3)

    @qml.qnode(dev)
    def circuit(theta):
        qml.Hadamard(0)
        qml.CNOT([0, 1])
        qml.RY(theta, wires=2)
        return qml.state()

    batch = sample_records(circuit, 40_000, 0.8, seed=11)
    assert isinstance(batch, qsense.ShadowBatch) and batch.T == 40_000 and batch.wires == (0, 1, 2)
    obs = ["X0 X1", "Z2", "Z0 X2"]
    est = qsense.ShadowEstimator(obs)
    est.update(batch)
    r = est.estimate()
    truth = sims.exact_expval(circuit(0.8), obs)
    assert np.all(np.abs(r.values - truth) < 4 * r.stderr)
    pairs = sample_records(circuit, 3_000, 0.8, kind="bell", seed=12)
    assert isinstance(pairs, qsense.BellBatch)
    b = qsense.BellEstimator(obs)
    b.update(pairs)
    rb = b.estimate()
    assert np.all(np.abs(rb.values - truth**2) < 4 * rb.stderr + 1e-9)


def test_example_script_runs_as_its_docstring_says():
    """The docstring's first command, exactly: ``python examples/pennylane_ghz_shadows.py``."""
    import importlib.util
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    script = root / "examples" / "pennylane_ghz_shadows.py"
    spec = importlib.util.spec_from_file_location("pennylane_ghz_shadows", script)
    doc = spec.loader.get_source("pennylane_ghz_shadows").split('"""')[1]
    cmd = next(line.split("#")[0].strip() for line in doc.splitlines() if line.strip().startswith("python examples/"))
    assert cmd == "python examples/pennylane_ghz_shadows.py"
    out = subprocess.run([sys.executable, str(script)], cwd=root, capture_output=True, text=True, timeout=180, check=True).stdout
    worst = float(out.rsplit("largest deviation:", 1)[1].split()[0])
    assert worst < 5.0, out
