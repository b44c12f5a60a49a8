"""Online derandomized bases through the PennyLane driver against PennyLane's own
classical shadows: snapshots and time until every target's error is within eps.

The 6-qubit circuit and the eight 2-3-local targets of
``examples/derandomized_stream.py`` on ``default.qubit`` in device mode (the
device runs every measurement), batches of ``--batch`` snapshots:

* **qsense, derandomized**: ``PennyLaneDriver(..., mode="device",
  bases=DerandomizedBasisPolicy(targets, eps, random_fraction=r))`` streamed until
  ``policy.converged`` (every matched-ratio error bar <= eps); the device runs
  one rotated ``qml.sample`` circuit per distinct setting of a batch;
* **qsense, derandomized, state mode**: the same, but the driver samples the
  circuit's state exactly in the chosen bases (``sims.sample_in_bases``): the
  classical cost without one device circuit per setting;
* **qsense, uniform**: the same driver without ``bases=`` (the device's own
  ``qml.classical_shadow``), stopped when ``ShadowEstimator(targets,
  method="matched")`` has every error bar <= eps;
* **qsense QiskitDriver on Aer** (device mode, derandomized and uniform): the
  same circuit through the Qiskit driver, every batch one Aer job;
* **PennyLane** (the peer): ``qml.classical_shadow`` QNode executions of the same
  batch size, then ``qml.ClassicalShadow(bits, recipes).expval(targets)``, for
  (a) as many snapshots as qsense's uniform stream needed (PennyLane reports no
  error bar, so it cannot decide by itself when to stop) and (b) as many as the
  derandomized stream needed.

Each row prints the snapshots, CPU seconds of this process (best of
``--repeat``; on a shared machine wall time measures the neighbours, so both are
printed) and the RMS and largest error against the exact values, in units of eps.
The last lines print the ratios.

Usage: ``python benchmarks/bench_driver_bases.py [--eps 0.05] [--random-fraction 0.1] [--batch 200] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import numpy as np
import pennylane as qml

import qsense
from qsense import sims
from qsense.acquisition.scheduler import DerandomizedBasisPolicy
from qsense.drivers.pennylane_device import PennyLaneDriver

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from derandomized_stream import ANGLES, TARGETS, N, circuit, exact_state, until_converged


def timed(fn):
    """(result, CPU seconds, wall seconds) of ``fn()``."""
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c0, time.perf_counter() - w0


def qsense_derandomized(args, seed: int, mode: str = "device") -> tuple[int, np.ndarray]:
    dev = qml.device("default.qubit", wires=N, seed=seed)
    policy = DerandomizedBasisPolicy(TARGETS, args.eps, random_fraction=args.random_fraction, n=N, seed=seed)
    drv = PennyLaneDriver(circuit, dev, mode=mode, params=(ANGLES,), bases=policy, batch_size=args.batch,
                          total=2_000_000, seed=seed)
    T = asyncio.run(until_converged(drv, lambda b: policy.converged))
    return T, policy.estimate().values


def qsense_uniform(args, seed: int, mode: str = "device") -> tuple[int, np.ndarray]:
    dev = qml.device("default.qubit", wires=N, seed=seed)
    est = qsense.ShadowEstimator(TARGETS, method="matched")

    def done(batch):
        est.update(batch)
        return bool(np.all(est.estimate().stderr <= args.eps))

    drv = PennyLaneDriver(circuit, dev, mode=mode, params=(ANGLES,), batch_size=args.batch, total=2_000_000, seed=seed)
    return asyncio.run(until_converged(drv, done)), est.estimate().values


def qiskit_circuit():
    """The example's circuit as a Qiskit QuantumCircuit (qubit i = wire i)."""
    from qiskit import QuantumCircuit

    qc = QuantumCircuit(N)
    for i in range(N):
        qc.ry(ANGLES[i], i)
    for i in range(N - 1):
        qc.cx(i, i + 1)
    for i in range(N):
        qc.rx(0.5 * ANGLES[(i + 2) % N], i)
    return qc


def qsense_qiskit(args, seed: int, derandomized: bool) -> tuple[int, np.ndarray]:
    from qiskit_aer import AerSimulator

    from qsense.drivers.qiskit_device import QiskitDriver

    est = qsense.ShadowEstimator(TARGETS, method="matched")
    policy = DerandomizedBasisPolicy(TARGETS, args.eps, random_fraction=args.random_fraction, n=N, seed=seed)

    def done(batch):
        if derandomized:
            return policy.converged
        est.update(batch)
        return bool(np.all(est.estimate().stderr <= args.eps))

    # one Aer thread: the shared cores; the padded sweep runs every setting of a batch as one job
    drv = QiskitDriver(qiskit_circuit(), AerSimulator(max_parallel_threads=1), mode="device",
                       bases=policy if derandomized else None, batch_size=args.batch, total=2_000_000, seed=seed)
    T = asyncio.run(until_converged(drv, done))
    return T, (policy.estimate() if derandomized else est.estimate()).values


def pennylane_shadows(args, seed: int, T: int) -> tuple[int, np.ndarray]:
    dev = qml.device("default.qubit", wires=N, seed=seed)

    rng = np.random.default_rng(seed)

    @qml.set_shots(args.batch)
    @qml.qnode(dev)
    def shadow(w, s):
        circuit(w)
        return qml.classical_shadow(wires=range(N), seed=s)  # recipes seeded per batch: reproducible

    bits, recipes = [], []
    for _ in range(-(-T // args.batch)):
        b, r = shadow(ANGLES, int(rng.integers(2**31)))
        bits.append(np.asarray(b))
        recipes.append(np.asarray(r))
    cs = qml.ClassicalShadow(np.concatenate(bits)[:T], np.concatenate(recipes)[:T])
    obs = [qml.prod(*[getattr(qml, "Pauli" + tok[0])(int(tok[1:])) for tok in t.split()]) for t in TARGETS]
    return T, np.asarray(cs.expval(obs), dtype=float)


def best(fn, repeat: int):
    runs = [timed(fn) for _ in range(repeat)]
    (T, values), _, _ = runs[0]
    return T, values, min(r[1] for r in runs), min(r[2] for r in runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--eps", type=float, default=0.05)
    ap.add_argument("--random-fraction", type=float, default=0.1)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--seeds", type=int, default=8, help="seeds for the snapshot counts (state mode)")
    ap.add_argument("--no-qiskit", action="store_true", help="skip the QiskitDriver rows")
    args = ap.parse_args()
    exact = sims.exact_expval(exact_state(qml.device("default.qubit", wires=N)), TARGETS)
    print(f"# {N} qubits, {len(TARGETS)} targets of weight 2-3, eps = {args.eps}, random fraction {args.random_fraction}, "
          f"batches of {args.batch}; load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    rows = []
    T_d, v, cpu, wall = best(lambda: qsense_derandomized(args, args.seed), args.repeat)
    rows.append(("qsense, derandomized policy", T_d, v, cpu, wall))
    T_s, v_s, cpu_s, wall_s = best(lambda: qsense_derandomized(args, args.seed, "state"), args.repeat)
    T_u, v, cpu, wall = best(lambda: qsense_uniform(args, args.seed), args.repeat)
    rows.append(("qsense, uniform (qml.classical_shadow)", T_u, v, cpu, wall))
    for T, what in ((T_u, "as many as qsense uniform"), (T_d, "as many as qsense derandomized")):
        _, v, cpu, wall = best(lambda T=T: pennylane_shadows(args, args.seed, T), args.repeat)
        rows.append((f"PennyLane ClassicalShadow, {what}", T, v, cpu, wall))
    rows.append(("qsense, derandomized, state mode", T_s, v_s, cpu_s, wall_s))
    if not args.no_qiskit:
        for flag, name in ((True, "derandomized"), (False, "uniform")):
            rows.append((f"qsense QiskitDriver on Aer, {name}",) + best(lambda f=flag: qsense_qiskit(args, args.seed, f), args.repeat))
    print(f"{'':52s} {'snapshots':>9s} {'CPU s':>7s} {'wall s':>7s} {'RMS err/eps':>11s} {'max err/eps':>11s}")
    for name, T, v, cpu, wall in rows:
        err = np.abs(v - exact) / args.eps
        print(f"{name:52s} {T:9d} {cpu:7.2f} {wall:7.2f} {np.sqrt(np.mean(err**2)):11.2f} {err.max():11.2f}")
    d, u, p = rows[0], rows[1], rows[2]
    print(f"snapshots to eps: uniform / derandomized = {u[1] / d[1]:.1f}x")
    print(f"CPU to eps: PennyLane ClassicalShadow / qsense derandomized = {p[3] / d[3]:.1f}x; "
          f"qsense uniform / qsense derandomized = {u[3] / d[3]:.1f}x")
    print(f"at the derandomized count, PennyLane's RMS error is {np.sqrt(np.mean(((rows[3][2] - exact) / args.eps) ** 2)):.2f} eps")
    seeds = range(100, 100 + args.seeds)
    Td = np.array([qsense_derandomized(args, s, "state")[0] for s in seeds])
    Tu = np.array([qsense_uniform(args, s, "state")[0] for s in seeds])
    print(f"snapshots to eps over {args.seeds} seeds (state mode): derandomized {Td.min()}-{Td.max()} (mean {Td.mean():.0f}), "
          f"uniform {Tu.min()}-{Tu.max()} (mean {Tu.mean():.0f}); ratio of means {Tu.mean() / Td.mean():.1f}x")


if __name__ == "__main__":
    main()
