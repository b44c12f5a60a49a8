"""The circuit drivers' ``bases=`` option: fixed basis lists and basis policies
(the online derandomized one) drive real PennyLane and Qiskit Aer measurements.

Physics checks use states whose outcomes in the chosen bases are certain (a GHZ
state: Z rows all equal, X^4 even parity, Y Y X X odd parity), so a driver that
measured other bases than the records claim fails at once; the derandomized
stream is checked against exact expectation values (``sims.exact_expval``,
``qiskit.quantum_info``) and against a uniform-basis stream of the same circuit.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pennylane as qml
import pytest
from qiskit import QuantumCircuit
from qiskit.quantum_info import SparsePauliOp, Statevector
from qiskit_aer import AerSimulator

import qsense
from qsense import sims
from qsense.acquisition.scheduler import DerandomizedBasisPolicy, UniformBasisPolicy
from qsense.drivers.pennylane_device import PennyLaneDriver
from qsense.drivers.qiskit_device import QiskitDriver, QiskitDriverError

# ZZZZ, XXXX, YYXX: on GHZ(4) all-equal outcomes, even parity, odd parity
FIXED = np.array([[2, 2, 2, 2], [0, 0, 0, 0], [1, 1, 0, 0]], dtype=np.uint8)


def aer(**options) -> AerSimulator:
    """Aer on one thread: the test machine's cores are shared (as in test_driver_qiskit)."""
    return AerSimulator(max_parallel_threads=1, **options)


def pl_ghz():
    qml.Hadamard(0)
    for i in range(3):
        qml.CNOT([i, i + 1])


def qk_ghz() -> QuantumCircuit:
    qc = QuantumCircuit(4)
    qc.h(0)
    for i in range(3):
        qc.cx(i, i + 1)
    return qc


def make(name: str, bases, **kw):
    """A driver of the GHZ(4) circuit by (framework, mode, backend) name."""
    if name == "pennylane-state":
        return PennyLaneDriver(pl_ghz, qml.device("default.qubit", wires=4), bases=bases, **kw)
    if name == "pennylane-device":
        # default.qubit supports qml.classical_shadow: chosen bases must bypass it
        return PennyLaneDriver(pl_ghz, qml.device("default.qubit", wires=4, seed=7), mode="device", bases=bases, **kw)
    if name == "qiskit-state":
        return QiskitDriver(qk_ghz(), bases=bases, **kw)
    if name == "qiskit-density":  # a density matrix in state mode
        return QiskitDriver(qk_ghz(), state="density", bases=bases, **kw)
    if name == "qiskit-aer-state":
        return QiskitDriver(qk_ghz(), aer(), bases=bases, **kw)
    if name == "qiskit-aer-padded":
        return QiskitDriver(qk_ghz(), aer(), mode="device", bases=bases, **kw)
    if name == "qiskit-aer-unpadded":
        return QiskitDriver(qk_ghz(), aer(), mode="device", pad_shots=False, bases=bases, **kw)
    if name == "qiskit-sampler":
        return QiskitDriver(qk_ghz(), None, mode="device", bases=bases, **kw)
    raise AssertionError(name)


DRIVERS = ["pennylane-state", "pennylane-device", "qiskit-state", "qiskit-density", "qiskit-aer-state", "qiskit-aer-padded",
           "qiskit-aer-unpadded", "qiskit-sampler"]


def check_ghz_outcomes(batch: qsense.ShadowBatch) -> None:
    """Outcomes that are certain for GHZ(4) in the FIXED rows."""
    b, o = batch.bases, batch.outcomes.astype(int)
    z = (b == 2).all(axis=1)
    x = (b == 0).all(axis=1)
    yyxx = (b == FIXED[2]).all(axis=1)
    assert z.any() and x.any() and yyxx.any()
    assert (o[z] == o[z][:, :1]).all()  # |0000> or |1111>
    assert (o[x].sum(axis=1) % 2 == 0).all()  # <XXXX> = +1
    assert (o[yyxx].sum(axis=1) % 2 == 1).all()  # <YYXX> = -1
    # both GHZ branches occur: the Z outcomes are random, not a constant
    assert 0 < o[z][:, 0].mean() < 1


# -- (a) fixed bases are measured, cycled across batches -------------------------------------


@pytest.mark.parametrize("name", DRIVERS)
def test_fixed_bases_are_the_records_bases_cycled(name):
    drv = make(name, FIXED, batch_size=50, total=140, seed=3)
    batches = asyncio.run(drv.collect())
    assert [b.T for b in batches] == [50, 50, 40]
    data = qsense.concatenate(batches)
    # 50 is not a multiple of 3: the cycle continues across batch boundaries
    np.testing.assert_array_equal(data.bases, FIXED[np.arange(140) % 3])
    assert data.bases.dtype == np.uint8
    check_ghz_outcomes(data)
    # the synchronous sample() continues the same cycle
    more = drv.sample(4)
    np.testing.assert_array_equal(more.bases, FIXED[(140 + np.arange(4)) % 3])


def test_random_bases_unchanged_without_the_option():
    # bases=None keeps today's i.i.d. uniform bases (all 81 settings, each ~1/81)
    data = make("qiskit-aer-padded", None, batch_size=4000, seed=1).sample(4000)
    _, counts = np.unique(data.bases, axis=0, return_counts=True)
    # 4000 / 81 = 49.4 per setting (sd 7): none rare, none favoured
    assert len(counts) == 81 and counts.min() > 20 and counts.max() < 85, (counts.min(), counts.max())


# -- (b) the derandomized policy converges faster, with honest estimates -------------------------

TARGETS = ["X0 Z1", "Z1 Z2", "Y2 X3", "X0 Z2 X4", "Z1 Y3 Z4", "X2 X3 X4"]
EPS = 0.1
ANGLES = np.array([0.3, 1.1, -0.7, 0.5, 2.0])


def pl_probe(w):
    for i in range(5):
        qml.RY(w[i], i)
    for i in range(4):
        qml.CNOT([i, i + 1])
    for i in range(5):
        qml.RX(0.5 * w[(i + 2) % 5], i)


def qk_probe(w) -> QuantumCircuit:
    qc = QuantumCircuit(5)
    for i in range(5):
        qc.ry(w[i], i)
    for i in range(4):
        qc.cx(i, i + 1)
    for i in range(5):
        qc.rx(0.5 * w[(i + 2) % 5], i)
    return qc


def exact_values() -> np.ndarray:
    psi = np.asarray(qml.execute([qml.tape.QuantumScript(qml.tape.make_qscript(pl_probe)(ANGLES).operations,
                                                         [qml.state()])], qml.device("default.qubit", wires=5))[0])
    ex = sims.exact_expval(psi, TARGETS)
    # the same values from Qiskit's own simulator and operator conversion
    sv = Statevector(qk_probe(ANGLES))
    np.testing.assert_allclose(ex, [_qiskit_expval(sv, t) for t in TARGETS], atol=1e-10)
    return ex


def _qiskit_expval(sv: Statevector, word: str) -> float:
    label = ["I"] * 5
    for tok in word.split():
        label[int(tok[1:])] = tok[0]
    return float(sv.expectation_value(SparsePauliOp("".join(label)[::-1])).real)  # Qiskit: qubit 0 last


async def to_convergence(drv, done, limit: int) -> int:
    """Snapshots the stream measures until ``done(batch)`` says the targets are met."""
    async for batch in drv:
        if done(batch):
            drv.stop()
    assert drv.produced < limit, f"not converged within {limit} snapshots"
    return drv.produced


def uniform_run(drv) -> tuple[int, qsense.ShadowEstimator]:
    est = qsense.ShadowEstimator(TARGETS, method="matched")

    def done(batch):
        est.update(batch)
        return bool(np.all(est.estimate().stderr <= EPS))

    return asyncio.run(to_convergence(drv, done, drv.total)), est


@pytest.mark.parametrize("framework", ["pennylane-state", "qiskit-aer-device"])
def test_derandomized_policy_converges_with_fewer_snapshots(framework):
    exact = exact_values()
    limit = 20_000

    def driver(bases, seed):
        if framework == "pennylane-state":
            return PennyLaneDriver(pl_probe, qml.device("default.qubit", wires=5), params=(ANGLES,), bases=bases,
                                   batch_size=100, total=limit, seed=seed)
        return QiskitDriver(qk_probe(ANGLES), aer(), mode="device", bases=bases, batch_size=100, total=limit, seed=seed)

    policy = DerandomizedBasisPolicy(TARGETS, EPS, random_fraction=0.1, n=5, seed=11)
    drv = driver(policy, 12)
    T_online = asyncio.run(to_convergence(drv, lambda b: policy.converged, limit))
    T_uniform, est = uniform_run(driver(None, 13))
    # seeds 0-7 of each gave 400-500 vs 2700-3100 snapshots (6x)
    assert 3 * T_online < T_uniform, (T_online, T_uniform)
    assert policy.counters["designed"] + policy.counters["random"] == T_online
    assert policy.counters["random"] >= 0.05 * T_online
    for r in (policy.estimate(), est.estimate()):
        assert np.all(r.stderr <= EPS)
        assert np.all(np.abs(r.values - exact) < 4 * r.stderr), (r.values, exact, r.stderr)


@pytest.mark.slow
def test_matched_error_bars_through_the_driver_cover_exact_values():
    exact = exact_values()
    z = []
    dev = qml.device("default.qubit", wires=5)
    for seed in range(40):
        policy = DerandomizedBasisPolicy(TARGETS, 0.15, random_fraction=0.1, n=5, seed=seed)
        drv = PennyLaneDriver(pl_probe, dev, params=(ANGLES,), bases=policy, batch_size=60, total=240, seed=100 + seed)
        asyncio.run(drv.collect())
        r = policy.estimate()
        z.append((r.values - exact) / r.stderr)
    z = np.abs(np.concatenate(z))
    assert np.isfinite(z).all()
    assert abs(np.mean(z < 1) - 0.683) < 4 * np.sqrt(0.683 * 0.317 / z.size), np.mean(z < 1)
    assert np.mean(z < 2) > 0.92


# -- (c) the policy sees every batch before the consumer does ------------------------------------


class Recording:
    """A policy wrapper that logs what the driver asks and hands back."""

    def __init__(self, inner):
        self.inner = inner
        self.n = inner.n
        self.asked: list[int] = []
        self.issued: list[np.ndarray] = []
        self.updates: list[qsense.ShadowBatch] = []

    def next_bases(self, count):
        self.asked.append(count)
        out = self.inner.next_bases(count)
        self.issued.append(out)
        return out

    def update(self, batch):
        self.updates.append(batch)
        self.inner.update(batch)


@pytest.mark.parametrize("name", ["pennylane-device", "qiskit-aer-padded"])
def test_update_is_called_with_every_batch_before_it_is_yielded(name):
    rec = Recording(DerandomizedBasisPolicy(["Z0 Z1", "X0 X1 X2 X3", "Y0 Y1 X2 X3"], 0.2, n=4, seed=2))
    drv = make(name, rec, batch_size=30, total=100, seed=4)

    async def consume():
        seen = []
        async for batch in drv:
            assert rec.updates and rec.updates[-1] is batch  # fed back before we got it
            seen.append(batch)
        return seen

    seen = asyncio.run(consume())
    assert rec.asked == [30, 30, 30, 10]
    assert len(rec.updates) == len(seen) == 4 and all(a is b for a, b in zip(rec.updates, seen))
    for issued, batch in zip(rec.issued, seen):
        np.testing.assert_array_equal(batch.bases, issued)  # the records carry the bases measured
    # the policy's estimator saw exactly these 100 snapshots: GHZ values are exact
    r = rec.inner.estimate()
    assert rec.inner.estimator.count == 100
    np.testing.assert_allclose(r.values, [1.0, 1.0, -1.0])
    sync = drv.sample(5)
    assert rec.updates[-1] is sync and rec.asked[-1] == 5


def test_a_policy_without_update_only_chooses():
    class OnlyZ:
        def next_bases(self, count):
            return np.full((count, 4), 2, dtype=np.int64)  # any integer dtype is accepted

    data = asyncio.run(make("qiskit-state", OnlyZ(), batch_size=20, total=40, seed=1).collect())
    for b in data:
        assert (b.bases == 2).all() and (b.outcomes == b.outcomes[:, :1]).all()


def test_uniform_policy_matches_the_uniform_distribution():
    data = make("pennylane-state", UniformBasisPolicy(4, seed=5), batch_size=2000, seed=6).sample(4000)
    freq = np.bincount(data.bases.ravel(), minlength=3) / data.bases.size
    assert np.all(np.abs(freq - 1 / 3) < 0.015)


# -- (d) bad input: one clear ValueError ------------------------------------------------------------


class WrongShape:
    def __init__(self, shape):
        self.shape = shape

    def next_bases(self, count):
        return np.zeros(self.shape(count), dtype=np.uint8)


class Failing:
    def next_bases(self, count):
        raise ValueError("count must be a non-negative integer")


BAD = [
    (np.zeros((3, 3), np.uint8), "shape \\(rows, 4\\)"),  # 3 columns for 4 qubits
    (np.full((2, 4), 3), "0 \\(X\\), 1 \\(Y\\) or 2 \\(Z\\)"),
    (np.full((2, 4), -1), "0 \\(X\\), 1 \\(Y\\) or 2 \\(Z\\)"),
    (np.full((2, 4), 1.0), "integers"),
    (np.zeros(4, np.uint8), "shape"),
    (np.zeros((0, 4), np.uint8), "at least one row"),
    ([[0, 1, 2, 0], [1]], "integer array"),
    (WrongShape(lambda c: (c, 3)), "next_bases.*shape \\(rows, 4\\)"),
    (WrongShape(lambda c: (c + 1, 4)), "must return .* rows"),
    (WrongShape(lambda c: (c,)), "next_bases.*shape"),
    (DerandomizedBasisPolicy(["Z0 Z1"], 0.1, n=5), "for 5 qubits; the register has 4"),
    (Failing(), "Failing.s next_bases\\(8\\) failed: count"),
]


def one_clear_error(name, bases, match):
    with pytest.raises(ValueError, match=match) as info:
        asyncio.run(make(name, bases, batch_size=8, total=8, seed=0).collect())
    assert "\n" not in str(info.value)
    if name.startswith("qiskit"):
        assert isinstance(info.value, QiskitDriverError)


@pytest.mark.parametrize("name", ["pennylane-device", "qiskit-state"])
@pytest.mark.parametrize("bases, match", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_bases_are_one_clear_error(name, bases, match):
    one_clear_error(name, bases, match)


@pytest.mark.parametrize("name", ["pennylane-state", "qiskit-aer-padded"])
@pytest.mark.parametrize("i", [0, 1, 7, 8, 10])
def test_bad_bases_in_the_other_modes(name, i):
    one_clear_error(name, *BAD[i])


def test_bad_widths_fail_at_construction_when_the_register_is_known():
    with pytest.raises(QiskitDriverError, match="shape \\(rows, 4\\)"):
        make("qiskit-aer-padded", np.zeros((2, 5), np.uint8))
    with pytest.raises(ValueError, match="for 5 qubits"):
        PennyLaneDriver(pl_ghz, qml.device("default.qubit", wires=4), wires=[0, 1, 2, 3],
                        bases=UniformBasisPolicy(5))


@pytest.mark.parametrize("name", ["pennylane-state", "qiskit-state"])
def test_bell_kind_refuses_bases(name):
    with pytest.raises(ValueError, match="kind='bell'"):
        make(name, FIXED, kind="bell")


def test_native_classical_shadow_refuses_bases():
    with pytest.raises(ValueError, match="draws its own random bases"):
        PennyLaneDriver(pl_ghz, qml.device("default.qubit", wires=4), mode="device", shadow_method="native", bases=FIXED)


@pytest.mark.slow
def test_example_runs_as_its_docstring_says():
    """examples/derandomized_stream.py, the docstring's first command exactly: the
    derandomized stream needs several times fewer snapshots and every estimate agrees
    with the exact value."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    script = root / "examples" / "derandomized_stream.py"
    doc = script.read_text().split('"""')[1]
    cmd = next(line.split("#")[0].strip() for line in doc.splitlines() if line.strip().startswith("python examples/"))
    assert cmd == "python examples/derandomized_stream.py"
    out = subprocess.run([sys.executable, str(script)], cwd=root, capture_output=True, text=True, timeout=120, check=True).stdout
    assert "derandomized (random fraction 0.1)" in out and "uniform random bases" in out and "held-out <Y0 Y1>" in out
    ratio = float(out.rsplit("snapshots uniform / derandomized:", 1)[1].split("x")[0])
    assert ratio > 3, out
    worst = float(out.rsplit("largest deviation:", 1)[1].split()[0])
    assert worst < 5.0, out


def test_native_classical_shadow_bases_follow_the_driver_seed():
    # qml.classical_shadow draws its recipes from its own seed: the driver's seed fixes it
    def run(seed):
        dev = qml.device("default.qubit", wires=4, seed=5)
        return PennyLaneDriver(pl_ghz, dev, mode="device", batch_size=50, seed=seed).sample(50)

    a, b, c = run(1), run(1), run(2)
    np.testing.assert_array_equal(a.bases, b.bases)
    np.testing.assert_array_equal(a.outcomes, b.outcomes)
    assert not np.array_equal(a.bases, c.bases)


@pytest.mark.parametrize("name", ["pennylane-device", "qiskit-aer-unpadded"])
def test_one_snapshot_batches(name):
    # small T: every batch one snapshot, the policy asked and fed back each time
    rec = Recording(DerandomizedBasisPolicy(["Z0 Z1 Z2 Z3"], 0.2, random_fraction=0.0, n=4, seed=3))
    batches = asyncio.run(make(name, rec, batch_size=1, total=5, seed=2).collect())
    assert [b.T for b in batches] == [1] * 5 and rec.asked == [1] * 5 and len(rec.updates) == 5
    data = qsense.concatenate(batches)
    assert (data.bases == 2).all() and (data.outcomes == data.outcomes[:, :1]).all()  # designed ZZZZ on GHZ
    assert rec.inner.estimate().values[0] == 1.0
