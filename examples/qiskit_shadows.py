"""Stream classical shadows and two-copy Bell shots of a noisy Qiskit GHZ probe on Aer.

A phase-sensing GHZ probe as a parametrised ``QuantumCircuit``: H, a CNOT
ladder, then RZ(phi) on every qubit, so that ideally <X...X> = cos(n phi) and
<Y X...X> = sin(n phi) (qsense label order: wire 0 first).  The phase
accumulation dephases: each RZ carries a phase-damping error (an
``AerSimulator`` noise model).  The measurement gates (the rotations, the Bell
CNOT and H) run noise-free here, so the device-mode estimates target the noisy
state itself; noise on them would bias the estimates, as on hardware.  Halfway
through the stream the phase is changed with ``driver.set_params`` and the
estimators are restarted, as a sensing application tracking a signal would.

    python examples/qiskit_shadows.py                     # device mode: Aer runs the measurements
    python examples/qiskit_shadows.py --mode state        # Aer computes the noisy state, qsense samples it
    python examples/qiskit_shadows.py --n 4 --noise 0.0 --shots 20000   # noise-free

Prints, per phase, the estimated and exact values (the noisy circuit's density
matrix from Aer's ``save_density_matrix``) of a few Pauli expectations
(shadows), squared expectations and the purity (Bell shots), with one-sigma
error bars, and the largest deviation in units of sigma.  Writes no files.
"""

from __future__ import annotations

import argparse
import asyncio
import math

import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit.quantum_info import DensityMatrix, SparsePauliOp
from qiskit_aer import AerSimulator
from qiskit_aer.noise import NoiseModel, phase_damping_error

import qsense
from qsense.drivers.qiskit_device import QiskitDriver

PHI = Parameter("phi")


def ghz_probe(n: int) -> QuantumCircuit:
    """GHZ state with phase n*phi: H, CNOT ladder, RZ(phi) on every qubit."""
    qc = QuantumCircuit(n)
    qc.h(0)
    for q in range(n - 1):
        qc.cx(q, q + 1)
    for q in range(n):
        qc.rz(PHI, q)
    return qc


def noise_model(p: float) -> NoiseModel:
    # the circuit's own gates in the basis, so that transpiling keeps them (noise attaches by name)
    nm = NoiseModel(basis_gates=["h", "rz", "sx", "x", "u", "cx"])
    if p > 0:
        nm.add_all_qubit_quantum_error(phase_damping_error(p), ["rz"])
    return nm


def exact_state(qc: QuantumCircuit, phi: float, nm: NoiseModel) -> DensityMatrix:
    c = qc.assign_parameters({PHI: phi})
    c.save_density_matrix()
    sim = AerSimulator(method="density_matrix", noise_model=nm, max_parallel_threads=1)
    return DensityMatrix(sim.run(c).result().data(0)["density_matrix"])


def labels_for(n: int) -> list[str]:
    return ["X" * n, "Y" + "X" * (n - 1), "Z" * 2 + "I" * (n - 2), "Z" + "I" * (n - 1)]


async def run_phase(driver: QiskitDriver, kind_labels: list[str], batches: int) -> qsense.ShadowEstimator | qsense.BellEstimator:
    est = qsense.ShadowEstimator(kind_labels) if driver.kind == "shadow" else qsense.BellEstimator(kind_labels)
    stream = driver.stream()
    try:
        async for i, batch in _enumerate(stream):
            est.update(batch)
            if i + 1 == batches:
                break
    finally:
        await stream.aclose()
    return est


async def _enumerate(aiter):
    i = 0
    async for x in aiter:
        yield i, x
        i += 1


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=3, help="qubits (default 3)")
    ap.add_argument("--mode", choices=["device", "state"], default="device")
    ap.add_argument("--noise", type=float, default=0.1, help="phase damping of each RZ (default 0.1)")
    ap.add_argument("--shots", type=int, default=12000, help="snapshots per phase (default 12000)")
    ap.add_argument("--batch", type=int, default=3000)
    ap.add_argument("--phases", type=float, nargs="*", default=[0.2, 0.5])
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    if args.n < 2:
        ap.error("--n must be at least 2")
    qc = ghz_probe(args.n)
    nm = noise_model(args.noise)
    backend = AerSimulator(noise_model=nm, max_parallel_threads=1)
    labels = labels_for(args.n)
    batches = max(1, math.ceil(args.shots / args.batch))
    shadows = QiskitDriver(qc, backend, mode=args.mode, params={PHI: args.phases[0]}, batch_size=args.batch, seed=args.seed)
    bell = QiskitDriver(qc, backend, kind="bell", mode=args.mode, params={PHI: args.phases[0]}, batch_size=args.batch,
                        seed=args.seed + 1)
    worst = 0.0
    for phi in args.phases:
        shadows.set_params(phi=phi)
        bell.set_params({PHI: phi})
        rho = exact_state(qc, phi, nm)
        exact = np.array([rho.expectation_value(SparsePauliOp(lab[::-1])).real for lab in labels])  # Qiskit reads qubit 0 last
        s = (await run_phase(shadows, labels, batches)).estimate()
        b_est = await run_phase(bell, labels, batches)
        b, p = b_est.estimate(), b_est.purity()
        print(f"phi = {phi:.4f}   ({args.mode} mode, n = {args.n}, RZ phase damping {args.noise})")
        for lab, v, e, x in zip(labels, s.values, s.stderr, exact):
            print(f"  <{lab}>      {v:+.4f} ± {e:.4f}   exact {x:+.4f}")
            worst = max(worst, abs(v - x) / e)
        for lab, v, e, x in zip(labels, b.values, b.stderr, exact**2):
            print(f"  <{lab}>^2    {v:+.4f} ± {e:.4f}   exact {x:+.4f}")
            worst = max(worst, abs(v - x) / max(e, 1e-12))
        pur = rho.purity().real
        print(f"  purity      {p.values[0]:+.4f} ± {p.stderr[0]:.4f}   exact {pur:+.4f}")
        worst = max(worst, abs(p.values[0] - pur) / max(p.stderr[0], 1e-12))
    print(f"copies measured: {shadows.copies} (shadows) + {bell.copies} (Bell, two per shot); jobs {shadows.jobs + bell.jobs}")
    print(f"largest deviation: {worst:.2f} sigma")


if __name__ == "__main__":
    asyncio.run(main())
