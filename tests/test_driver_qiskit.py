"""The Qiskit driver on real Qiskit simulators (quantum_info, Aer, StatevectorSampler,
a generic BackendV2), with and without a noise model: estimates against exact values
from ``qiskit.quantum_info`` (noisy ones from the channel built gate by gate), the
wire order, parameters changed mid-stream, pacing, cancellation and bad input."""

from __future__ import annotations

import asyncio
import math
import warnings

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import Gate, Parameter, ParameterVector
from qiskit.primitives import StatevectorSampler
from qiskit.providers.fake_provider import GenericBackendV2
from qiskit.quantum_info import DensityMatrix, Operator, SparsePauliOp, Statevector, partial_trace
from qiskit_aer import AerSimulator
from qiskit_aer.noise import NoiseModel, amplitude_damping_error, depolarizing_error
from qiskit_aer.primitives import SamplerV2 as AerSamplerV2

import qsense
from qsense.drivers.qiskit_device import QiskitBackendError, QiskitDriver, QiskitDriverError, sample_records

LABELS = ["ZZI", "XXI", "IYZ", "XIX", "ZIZ", "XYZ"]
THETA = Parameter("theta")

warnings.filterwarnings("ignore", message=".*has no QubitProperties.*")


def aer(**options) -> AerSimulator:
    """An AerSimulator on one thread: the test machine's cores are shared, and Aer's
    thread pool oversubscribes them (5-10x slower on many small experiments)."""
    return AerSimulator(max_parallel_threads=1, **options)


def prep_circuit() -> QuantumCircuit:
    qc = QuantumCircuit(3)
    qc.ry(THETA, 0)
    qc.cx(0, 1)
    qc.rx(0.3, 1)
    qc.ry(0.5, 2)
    qc.cx(1, 2)
    return qc


def qiskit_label(label: str) -> str:
    """qsense's dense label reads wire 0 first; Qiskit's reads qubit 0 last."""
    return label[::-1]


def exact_values(rho: DensityMatrix, labels=LABELS) -> np.ndarray:
    return np.array([rho.expectation_value(SparsePauliOp(qiskit_label(lab))).real for lab in labels])


def noisy_rho(circ: QuantumCircuit, errors: dict) -> DensityMatrix:
    """The exact state of ``circ`` with ``errors[name]`` applied after each such gate."""
    rho = DensityMatrix.from_label("0" * circ.num_qubits)
    for inst in circ.data:
        q = [circ.find_bit(b).index for b in inst.qubits]
        rho = rho.evolve(Operator(inst.operation), q)
        if inst.operation.name in errors:
            rho = rho.evolve(errors[inst.operation.name].to_quantumchannel(), q)
    return rho


def shadow_estimate(batch, labels=LABELS):
    e = qsense.ShadowEstimator(labels)
    e.update(batch)
    return e.estimate()


def bell_estimate(batch, labels=LABELS):
    e = qsense.BellEstimator(labels)
    e.update(batch)
    r, p = e.estimate(), e.purity()
    return np.r_[r.values, p.values], np.r_[r.stderr, p.stderr]


def consistent(a, sa, b, sb=0.0, z=4.5):
    return bool(np.all(np.abs(np.asarray(a) - np.asarray(b)) <= z * np.sqrt(np.asarray(sa) ** 2 + np.asarray(sb) ** 2) + 1e-12))


BACKENDS = {
    "info": ("state", lambda: None),
    "aer-state": ("state", lambda: aer()),
    "statevector-sampler": ("device", lambda: StatevectorSampler()),
    "aer": ("device", lambda: aer()),
    "aer-sampler": ("device", lambda: AerSamplerV2(options={"backend_options": {"max_parallel_threads": 1}})),
    "generic-backend": ("device", lambda: GenericBackendV2(6, noise_info=False, seed=4)),
}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n == "generic-backend" else n for n in BACKENDS]
)  # the generic backend runs one Aer job per distinct shot count on all threads: the slowest case
def test_shadows_match_exact_values(name):
    mode, make = BACKENDS[name]
    theta = 0.9
    exact = exact_values(DensityMatrix(prep_circuit().assign_parameters([theta])))
    drv = QiskitDriver(prep_circuit(), make(), mode=mode, params={"theta": theta}, batch_size=3000, total=9000, seed=3)
    b = qsense.concatenate(asyncio.run(drv.collect()))
    assert isinstance(b, qsense.ShadowBatch) and b.T == 9000 and b.wires == (0, 1, 2)
    r = shadow_estimate(b)
    assert consistent(r.values, r.stderr, exact), (name, r.values, exact)
    assert drv.copies == 9000 and drv.jobs == (3 if mode == "device" else 1)  # one job per batch
    if mode == "device":
        # every basis drawn i.i.d. uniform: each qubit sees X, Y, Z a third of the time each
        freq = np.stack([np.bincount(b.bases[:, q], minlength=3) for q in range(3)]) / b.T
        assert np.all(np.abs(freq - 1 / 3) < 0.03), freq  # 6 sigma at T = 9000


def test_device_error_bars_cover_the_truth_at_the_stated_rate():
    """60 independent 1000-shot device-mode batches on Aer (settings run as one padded
    sweep): the one-sigma bars cover the exact values ~68% of the time, two-sigma ~95%."""
    theta = 0.9
    exact = exact_values(DensityMatrix(prep_circuit().assign_parameters([theta])))
    drv = QiskitDriver(prep_circuit(), aer(), mode="device", params=(theta,), seed=21)
    z = []
    for _ in range(60):
        r = shadow_estimate(drv.sample(1000))
        z.append((r.values - exact) / r.stderr)
    z = np.abs(np.array(z))
    assert 0.58 <= np.mean(z < 1) <= 0.78 and 0.90 <= np.mean(z < 2) <= 0.99, (np.mean(z < 1), np.mean(z < 2))


@pytest.mark.parametrize("name", ["info", "aer-state", "statevector-sampler", "aer"])
def test_bell_matches_exact_squares_and_purity(name):
    mode, make = BACKENDS[name]
    theta = 0.9
    rho = DensityMatrix(prep_circuit().assign_parameters([theta]))
    exact = np.r_[exact_values(rho) ** 2, rho.purity().real]
    drv = QiskitDriver(prep_circuit(), make(), kind="bell", mode=mode, params=[theta], batch_size=5000, total=10_000, seed=4)
    b = qsense.concatenate(asyncio.run(drv.collect()))
    assert isinstance(b, qsense.BellBatch) and b.T == 10_000 and b.n == 3
    v, s = bell_estimate(b)
    assert consistent(v, s, exact), (name, v, exact)
    assert drv.copies == 20_000  # two copies per Bell shot


def test_state_mode_states_are_exact_and_wire_ordered():
    """The state handed to the samplers is the circuit's, wire 0 most significant, with
    ancillas traced out and the register in the order given."""
    bound = prep_circuit().assign_parameters([0.7])
    rho = DensityMatrix(bound)
    psi = Statevector(bound)
    for backend in (None, aer()):
        drv = QiskitDriver(prep_circuit(), backend, params=(0.7,), seed=1)
        drv.sample(10)
        st = drv._sampler.state
        assert st.ndim == 1
        assert abs(np.vdot(psi.reverse_qargs().data, st)) == pytest.approx(1.0, abs=1e-9)
        # register (2, 0): trace out qubit 1; wire 0 = qubit 2 is the most significant, which is
        # exactly Qiskit's little-endian order of the kept qubits [0, 2]
        drv = QiskitDriver(prep_circuit(), backend, wires=[2, 0], params=(0.7,), seed=1)
        b = drv.sample(10)
        assert b.wires == (2, 0)
        np.testing.assert_allclose(drv._sampler.state, partial_trace(rho, [1]).data, atol=1e-9)
        drv = QiskitDriver(prep_circuit(), backend, state="density", params=(0.7,), seed=1)
        drv.sample(10)
        np.testing.assert_allclose(drv._sampler.state, rho.reverse_qargs().data, atol=1e-9)


def test_routed_layouts_and_user_pass_managers():
    """On a line-coupled device the transpiler moves qubits (layout != identity): the
    state-mode state and the device-mode records still follow the circuit's qubits."""
    from qiskit.transpiler import generate_preset_pass_manager

    line = GenericBackendV2(5, noise_info=False, seed=2, coupling_map=[[0, 1], [1, 2], [2, 3], [3, 4]])
    qc = QuantumCircuit(3)
    qc.h(0)
    qc.cx(0, 2)
    qc.ry(0.4, 1)
    qc.cx(1, 2)
    qc.x(1)
    drv = QiskitDriver(qc, AerSimulator.from_backend(line), state="density", seed=1)
    drv.sample(10)
    assert drv._pass_manager().run(qc).layout.final_index_layout() != [0, 1, 2]
    np.testing.assert_allclose(drv._sampler.state, DensityMatrix(qc).reverse_qargs().data, atol=1e-9)
    exact = exact_values(DensityMatrix(qc), ["ZZZ", "XZX", "IZI", "YXY"])
    b = QiskitDriver(qc, line, mode="device", seed=2, pad_shots=True).sample(6000)  # one sweep, not ~20 runs
    r = shadow_estimate(b, ["ZZZ", "XZX", "IZI", "YXY"])
    assert consistent(r.values, r.stderr, exact), (r.values, exact)
    # a user pass manager (e.g. ISA circuits for a runtime sampler) applies to samplers too
    pm = generate_preset_pass_manager(optimization_level=1, basis_gates=["rz", "sx", "cx"], seed_transpiler=1)
    drv = QiskitDriver(qc, StatevectorSampler(), mode="device", pass_manager=pm, seed=3)
    r = shadow_estimate(drv.sample(6000), ["ZZZ", "XZX", "IZI", "YXY"])
    assert consistent(r.values, r.stderr, exact)
    assert set(drv._templates["static"].circuit.count_ops()) <= {"rz", "sx", "cx", "measure", "barrier"}


NOISE = {"ry": depolarizing_error(0.15, 1).compose(amplitude_damping_error(0.2)), "cx": depolarizing_error(0.1, 2)}


def noise_model(errors: dict) -> NoiseModel:
    # the noise attaches to gates by name after transpiling; a basis holding the circuit's own
    # gates keeps rx from being rewritten with (noisy) ry, so the reference is the circuit as written
    nm = NoiseModel(basis_gates=["id", "rz", "sx", "x", "h", "u", "rx", "ry", "cx"])
    for gate, err in errors.items():
        nm.add_all_qubit_quantum_error(err, [gate])
    return nm


def test_noisy_aer_state_mode_is_the_exact_noisy_state():
    bound = prep_circuit().assign_parameters([0.9])
    ref = noisy_rho(bound, NOISE)
    drv = QiskitDriver(prep_circuit(), aer(noise_model=noise_model(NOISE)), params=(0.9,), seed=1)
    drv.sample(10)
    assert drv._sampler.density
    np.testing.assert_allclose(drv._sampler.state, ref.reverse_qargs().data, atol=1e-9)
    assert ref.purity().real < 0.8


@pytest.mark.parametrize("mode", ["state", "device"])
def test_noisy_shadows_match_the_noisy_channel(mode):
    bound = prep_circuit().assign_parameters([0.9])
    exact = exact_values(noisy_rho(bound, NOISE))
    ideal = exact_values(DensityMatrix(bound))
    backend = aer(noise_model=noise_model(NOISE))
    drv = QiskitDriver(prep_circuit(), backend, mode=mode, params={THETA: 0.9}, batch_size=6000, total=18_000, seed=5)
    r = shadow_estimate(qsense.concatenate(asyncio.run(drv.collect())))
    assert consistent(r.values, r.stderr, exact), (r.values, exact)
    assert not consistent(r.values, r.stderr, ideal)  # the data see the noise


@pytest.mark.parametrize("mode", ["state", "device"])
def test_noisy_bell_purity_matches_the_noisy_channel(mode):
    # noise on the preparation's ry gates only: the Bell measurement's CNOT and H stay ideal,
    # so the two-copy estimates target the noisy state itself
    errors = {"ry": NOISE["ry"]}
    bound = prep_circuit().assign_parameters([0.9])
    rho = noisy_rho(bound, errors)
    exact = np.r_[exact_values(rho) ** 2, rho.purity().real]
    backend = aer(noise_model=noise_model(errors))
    drv = QiskitDriver(prep_circuit(), backend, kind="bell", mode=mode, params=(0.9,), batch_size=6000, total=12_000, seed=6)
    v, s = bell_estimate(qsense.concatenate(asyncio.run(drv.collect())))
    assert consistent(v, s, exact), (v, exact)
    assert v[-1] < 0.9 and abs(v[-1] - 1.0) > 5 * s[-1]  # the purity estimate sees the noise


@pytest.mark.parametrize("name", ["info", "statevector-sampler", "aer", "generic-backend"])
def test_wire_order_qubit_zero_is_column_zero(name):
    """X on qubit 0 only: qiskit's bitstring '001'; qsense's outcomes row [1, 0, 0]."""
    mode, make = BACKENDS[name]
    qc = QuantumCircuit(3)
    qc.x(0)
    qc.h(2)
    b = QiskitDriver(qc, make(), mode=mode, seed=2).sample(3000)
    z = b.bases == 2
    means = [b.outcomes[z[:, q], q].mean() for q in range(3)]
    assert means[0] == 1.0 and means[1] == 0.0 and 0.4 < means[2] < 0.6, means
    r = shadow_estimate(b, ["Z0", "Z1", "X2", "ZIX"])
    assert consistent(r.values, r.stderr, [-1.0, 1.0, 1.0, -1.0])


def test_ancilla_register_in_device_mode():
    """The register (2, 0) of a 3-qubit circuit: qubit 1 is an ancilla, left unmeasured."""
    bound = prep_circuit().assign_parameters([1.1])
    red = partial_trace(DensityMatrix(bound), [1])  # little-endian in [0, 2]: label "AB" = A on 2, B on 0
    labels = ["ZZ", "XY", "ZI", "IZ", "YX"]
    exact = np.array([red.expectation_value(SparsePauliOp(lab)).real for lab in labels])
    drv = QiskitDriver(prep_circuit(), aer(), wires=[2, 0], mode="device", params=(1.1,), batch_size=8000, total=16_000, seed=7)
    b = qsense.concatenate(asyncio.run(drv.collect()))
    assert b.wires == (2, 0) and b.n == 2
    r = shadow_estimate(b, labels)
    assert consistent(r.values, r.stderr, exact), (r.values, exact)
    pairs = QiskitDriver(prep_circuit(), aer(), wires=[2, 0], kind="bell", mode="device", params=(1.1,), seed=8).sample(6000)
    v, s = bell_estimate(pairs, labels)
    assert consistent(v, s, np.r_[exact**2, red.purity().real])


def test_wide_ghz_device_and_small_batches():
    """An 8-qubit GHZ on Aer (nearly every shot draws a setting of its own), weight 8 in
    state mode, and one-shot batches."""
    n = 8
    qc = QuantumCircuit(n)
    qc.h(0)
    for q in range(n - 1):
        qc.cx(q, q + 1)
    drv = QiskitDriver(qc, aer(), mode="device", batch_size=1500, total=1500, seed=9)
    b = qsense.concatenate(asyncio.run(drv.collect()))
    assert len(np.unique(b.bases, axis=0)) > 1300 and drv.jobs == 1
    r = shadow_estimate(b, ["Z0 Z7", "Z3 Z4", "Z5"])
    assert consistent(r.values, r.stderr, [1.0, 1.0, 0.0])
    # weight 8: only shots that drew X everywhere see it; the state mode affords many
    st = QiskitDriver(qc, None, seed=9).sample(60_000)
    r8 = shadow_estimate(st, ["XXXXXXXX", "YYXXXXXX", "ZZZZZZZZ"])
    assert consistent(r8.values, r8.stderr, [1.0, -1.0, 1.0]) and r8.stderr[0] < 0.5
    tiny = QiskitDriver(qc, StatevectorSampler(), mode="device", batch_size=1, total=4, seed=1)
    batches = asyncio.run(tiny.collect())
    assert [x.T for x in batches] == [1, 1, 1, 1] and [x.seq for x in batches] == [0, 1, 2, 3]


def test_set_params_mid_stream_by_name_and_by_parameter():
    """RX(theta) on one qubit: theta = 0 reads Z-basis bit 0, theta = pi reads 1."""
    theta = Parameter("theta")
    qc = QuantumCircuit(1)
    qc.rx(theta, 0)
    for mode, backend in (("state", None), ("device", aer())):
        drv = QiskitDriver(qc, backend, mode=mode, params={"theta": 0.0}, batch_size=300, total=2700, seed=7, source="flip", seq0=10)
        seen = []

        async def consume(drv=drv, seen=seen):
            async for b in drv:
                z = b.outcomes[b.bases[:, 0] == 2, 0]
                seen.append((b.seq, b.source, int(z.min()), int(z.max())))
                if len(seen) == 3:
                    drv.set_params(theta=math.pi)
                if len(seen) == 6:
                    drv.set_params({theta: 0.0})

        asyncio.run(consume())
        assert [s[0] for s in seen] == list(range(10, 19)) and all(s[1] == "flip" for s in seen)
        assert [s[2:] for s in seen] == [(0, 0)] * 3 + [(1, 1)] * 3 + [(0, 0)] * 3, (mode, seen)


def test_params_as_function_of_time_and_parameter_vectors():
    vec = ParameterVector("w", 2)
    qc = QuantumCircuit(2)
    qc.rx(vec[0], 0)
    qc.rx(vec[1], 1)
    drv = QiskitDriver(qc, aer(), mode="device",
                       params=lambda t: {vec: [0.0, math.pi] if t < 1.0 else [math.pi, 0.0]},
                       batch_size=250, total=2000, rate=1000.0, realtime=False, seed=1)
    b = qsense.concatenate(asyncio.run(drv.collect()))
    np.testing.assert_allclose(b.t, np.arange(2000) / 1000.0)
    z0, z1 = b.bases[:, 0] == 2, b.bases[:, 1] == 2
    early = b.t < 1.0
    assert np.all(b.outcomes[z0 & early, 0] == 0) and np.all(b.outcomes[z1 & early, 1] == 1)
    assert np.all(b.outcomes[z0 & ~early, 0] == 1) and np.all(b.outcomes[z1 & ~early, 1] == 0)


def test_callable_circuit_like_a_quantum_function():
    def make(theta: float) -> QuantumCircuit:
        return prep_circuit().assign_parameters([theta])

    for theta in (0.2, 1.4):
        exact = exact_values(DensityMatrix(make(theta)))
        for mode, backend in (("state", None), ("device", StatevectorSampler())):
            r = shadow_estimate(QiskitDriver(make, backend, mode=mode, params=(theta,), seed=2).sample(12_000))
            assert consistent(r.values, r.stderr, exact), (theta, mode)


async def test_rate_limit_and_cancellation_leave_no_tasks():
    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    drv = QiskitDriver(qc, None, batch_size=100, rate=1000.0, seed=1)  # endless, paced
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
    drv2 = QiskitDriver(qc, StatevectorSampler(), mode="device", batch_size=50, seed=1)
    n = 0
    async for _ in drv2:
        n += 1
        if n == 3:
            drv2.stop()
    assert n == 3 and drv2.seq == 3 and drv2.produced == 150


def test_seeded_runs_reproduce_and_batches_differ():
    qc = prep_circuit()
    runs = [QiskitDriver(qc, aer(), kind="bell", mode="device", params=(0.4,), seed=11) for _ in range(2)]
    a1, a2 = runs[0].sample(500), runs[0].sample(500)
    b1 = runs[1].sample(500)
    assert np.array_equal(a1.outcomes, b1.outcomes)  # same seed, same records
    assert not np.array_equal(a1.outcomes, a2.outcomes)  # a fresh simulator seed per job
    s = StatevectorSampler(seed=3)  # an int-seeded sampler would repeat itself; the driver advances it
    drv = QiskitDriver(qc, s, kind="bell", mode="device", params=(0.4,))
    assert not np.array_equal(drv.sample(500).outcomes, drv.sample(500).outcomes)


def test_plugin_and_sample_records():
    from qsense import plugins

    assert plugins.load("driver", "qiskit") is QiskitDriver
    ghz = QuantumCircuit(3)
    ghz.h(0)
    ghz.cx(0, 1)
    ghz.cx(1, 2)
    b = sample_records(ghz, 20_000, seed=1)
    r = shadow_estimate(b, ["XXX", "Z0 Z1", "YYX"])
    assert consistent(r.values, r.stderr, [1.0, 1.0, -1.0])
    pairs = sample_records(prep_circuit(), 4000, {"theta": 0.3}, kind="bell", mode="device", backend=aer(), seed=2)
    assert isinstance(pairs, qsense.BellBatch) and pairs.T == 4000


def test_qiskit_operators_as_observables():
    """SparsePauliOp sums (Qiskit order, real coefficients) estimate <H> with an error bar."""
    from qsense.drivers.qiskit_device import observable

    bound = prep_circuit().assign_parameters([0.8])
    rho = DensityMatrix(bound)
    H = SparsePauliOp(["ZZI", "IXX", "YIY", "ZII"], coeffs=[0.5, -1.2, 0.3, 0.9])
    obs = [observable(H, "H"), observable("ZII"), observable(SparsePauliOp("IYX"))]
    exact = [rho.expectation_value(op).real for op in (H, SparsePauliOp("ZII"), SparsePauliOp("IYX"))]
    b = QiskitDriver(prep_circuit(), None, params=(0.8,), seed=4).sample(30_000)
    e = qsense.ShadowEstimator(obs)
    e.update(b)
    r = e.estimate()
    assert consistent(r.values, r.stderr, exact), (r.values, exact)
    assert str(obs[1]) == "Z2"  # Qiskit's "ZII" is Z on qubit 2
    one_line_error(QiskitDriverError, lambda: observable(SparsePauliOp(["XY"], coeffs=[1j])), "Hermitian")
    one_line_error(QiskitDriverError, lambda: observable("XQ"), "not a Qiskit Pauli label")
    one_line_error(QiskitDriverError, lambda: observable(3), "SparsePauliOp")


def one_line_error(exc_type, fn, match):
    with pytest.raises(exc_type, match=match) as info:
        fn()
    assert "\n" not in str(info.value), str(info.value)
    return info.value


def test_bad_input_is_one_clear_error():
    qc = prep_circuit()
    E = QiskitDriverError
    assert issubclass(E, ValueError)
    one_line_error(E, lambda: QiskitDriver(qc, None), "without values: theta")  # unbound
    one_line_error(E, lambda: QiskitDriver(qc, None, params={"phi": 1.0}), "no parameter 'phi'")
    one_line_error(E, lambda: QiskitDriver(qc, None, params=(1.0, 2.0)), "1 parameters .*got 2 values")
    one_line_error(E, lambda: QiskitDriver(qc, None, params=(float("nan"),)), "finite")
    one_line_error(E, lambda: QiskitDriver(qc, None, params=("x",)), "real numbers")
    measured = qc.copy()
    measured.measure_all()
    one_line_error(E, lambda: QiskitDriver(measured, None, params=(0.1,)), "already measures.*remove_final_measurements")
    one_line_error(E, lambda: QiskitDriver(qc, None, wires=[0, 5], params=(0.1,)), "qubit 5.*3 qubits")
    one_line_error(E, lambda: QiskitDriver(qc, None, wires=[0, 0], params=(0.1,)), "distinct")
    one_line_error(E, lambda: QiskitDriver("not a circuit"), "QuantumCircuit")
    one_line_error(E, lambda: QiskitDriver(qc, StatevectorSampler(), mode="state", params=(0.1,)), "state mode")
    one_line_error(E, lambda: QiskitDriver(qc, object(), mode="device", params=(0.1,)), "Sampler V2 primitive or a BackendV2")
    one_line_error(E, lambda: QiskitDriver(qc, AerSamplerV2(seed=3), mode="device", params=(0.1,)), "fixed seed")
    one_line_error(E, lambda: QiskitDriver(qc, None, shadow_method="native", params=(0.1,)), "no native")
    for key, value in (("kind", "x"), ("mode", "x"), ("batch_size", 0), ("total", -1), ("rate", 0.0), ("seq0", -2), ("state", "x")):
        one_line_error(E, lambda key=key, value=value: QiskitDriver(qc, None, params=(0.1,), **{key: value}), key)
    # width: two copies of 3 qubits do not fit on 5
    small = GenericBackendV2(5, noise_info=False, seed=1)
    drv = QiskitDriver(qc, small, kind="bell", mode="device", params=(0.1,))
    one_line_error(E, lambda: drv.sample(10), "2N = 6 qubits.*has 5")
    # a callable whose circuits change width, or returns something else
    drv = QiskitDriver(lambda w: QuantumCircuit(w), None, params=(2,), seed=1)
    drv.sample(5)
    one_line_error(E, lambda: drv.sample(5, 3), "3 qubits; earlier settings had 2")
    one_line_error(E, lambda: QiskitDriver(lambda: 7, None).sample(5), "must return a QuantumCircuit")
    # state mode refuses a density matrix too large for memory (14 qubits: 4 GiB) before allocating it
    wide = QuantumCircuit(14)
    wide.h(0)
    one_line_error(E, lambda: QiskitDriver(wide, None, wires=[0, 1], seed=1).sample(5), "density matrix of 14 qubits.*mode='device'")
    # a late bad value (set while streaming) fails the batch with the same clear error
    drv = QiskitDriver(qc, None, params=(0.1,))
    drv.set_params(phi=1.0)
    one_line_error(E, lambda: drv.sample(5), "no parameter 'phi'")


def test_backend_failures_surface_as_one_line():
    qc = QuantumCircuit(1)
    qc.append(Gate("mystery", 1, []), [0])  # no definition: nothing can run it
    for mode, backend in (("device", aer()), ("device", StatevectorSampler()), ("state", None)):
        drv = QiskitDriver(qc, backend, mode=mode, seed=1)
        err = one_line_error(QiskitBackendError, lambda drv=drv: drv.sample(10), "mystery|could not simulate")
        assert isinstance(err.__cause__, Exception)


@pytest.mark.slow
def test_example_runs_as_its_docstring_says():
    """examples/qiskit_shadows.py, the docstring's first command exactly: its estimates of
    the noisy GHZ probe agree with Aer's exact density matrix."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    script = root / "examples" / "qiskit_shadows.py"
    doc = script.read_text().split('"""')[1]
    cmd = next(line.split("#")[0].strip() for line in doc.splitlines() if line.strip().startswith("python examples/"))
    assert cmd == "python examples/qiskit_shadows.py"
    out = subprocess.run([sys.executable, str(script)], cwd=root, capture_output=True, text=True, timeout=120, check=True).stdout
    assert "phi = 0.2000" in out and "phi = 0.5000" in out and "purity" in out
    worst = float(out.rsplit("largest deviation:", 1)[1].split()[0])
    assert worst < 5.0, out
