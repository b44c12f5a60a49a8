"""Stream a PennyLane circuit with online derandomized bases, against uniform random bases.

A 6-qubit entangled circuit (RY layer, CNOT ladder, RX layer) on
``default.qubit`` is streamed twice through
:class:`qsense.drivers.pennylane_device.PennyLaneDriver`: once with
``bases=DerandomizedBasisPolicy(targets, eps, random_fraction=...)``, which picks
every batch's Pauli bases from the targets' current precision and gets every
batch back before the next is chosen, and once with today's uniformly random
bases.  Each stream stops as soon as every target's matched-ratio error bar is
within ``eps``; the script prints the snapshots each needed, the estimates
against the exact values (from the circuit's state) and the largest deviation in
units of sigma, and a held-out word nobody targeted, estimated from the
random fraction of the derandomized stream.

    python examples/derandomized_stream.py                         # state mode, eps 0.05
    python examples/derandomized_stream.py --mode device           # default.qubit runs the rotated circuits
    python examples/derandomized_stream.py --random-fraction 0.3 --eps 0.1

Writes no files.
"""

from __future__ import annotations

import argparse
import asyncio

import numpy as np
import pennylane as qml

import qsense
from qsense import sims
from qsense.acquisition.scheduler import DerandomizedBasisPolicy
from qsense.drivers.pennylane_device import PennyLaneDriver

N = 6
TARGETS = ["X0 Z1", "Z1 Z2", "Y2 X3", "Z3 Z4", "X4 X5", "X0 Z2 X4", "Z1 Y3 Z5", "X2 X3 X4"]
HELD_OUT = "Y0 Y1"  # no target measures Y on wires 0 and 1 together
ANGLES = np.array([0.3, 1.1, -0.7, 0.5, 2.0, -1.3])


def circuit(w: np.ndarray) -> None:
    """An entangled 6-qubit state with target values spread over (-1, 1)."""
    for i in range(N):
        qml.RY(w[i], i)
    for i in range(N - 1):
        qml.CNOT([i, i + 1])
    for i in range(N):
        qml.RX(0.5 * w[(i + 2) % N], i)


def exact_state(device: object) -> np.ndarray:
    ops = qml.tape.make_qscript(circuit)(ANGLES).operations
    return np.asarray(qml.execute([qml.tape.QuantumScript(ops, [qml.state()])], device)[0])


async def until_converged(driver: PennyLaneDriver, done) -> int:
    """Snapshots streamed until ``done(batch)`` (the driver's ``total`` bounds it)."""
    async for batch in driver:
        if done(batch):
            driver.stop()
    return driver.produced


def report(name: str, copies: int, est: qsense.Estimate, exact: np.ndarray) -> float:
    z = np.abs(est.values - exact) / est.stderr
    print(f"{name}: {copies} snapshots to reach the targets' precision")
    for label, v, s, e in zip(TARGETS, est.values, est.stderr, exact):
        print(f"  <{label}> = {v:+.4f} +- {s:.4f}   exact {e:+.4f}")
    return float(z.max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("state", "device"), default="state")
    ap.add_argument("--eps", type=float, default=0.05, help="one-sigma error wanted per target")
    ap.add_argument("--random-fraction", type=float, default=0.1)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if not 0 < args.eps < 1 or args.batch < 1:
        ap.error("--eps must lie in (0, 1) and --batch be positive")
    device = qml.device("default.qubit", wires=N, seed=args.seed)
    psi = exact_state(device)
    exact = sims.exact_expval(psi, TARGETS)
    limit = 400_000

    def driver(bases: object, seed: int) -> PennyLaneDriver:
        return PennyLaneDriver(circuit, device, mode=args.mode, params=(ANGLES,), bases=bases,
                               batch_size=args.batch, total=limit, seed=seed)

    try:
        policy = DerandomizedBasisPolicy(TARGETS, args.eps, random_fraction=args.random_fraction, n=N, seed=args.seed)
    except ValueError as exc:
        ap.error(str(exc))
    held = qsense.ShadowEstimator([HELD_OUT], method="matched")

    def online_done(batch: qsense.ShadowBatch) -> bool:
        held.update(batch)
        return policy.converged

    T_online = asyncio.run(until_converged(driver(policy, args.seed + 1), online_done))
    worst = report(f"derandomized (random fraction {args.random_fraction:g})", T_online, policy.estimate(), exact)

    uniform = qsense.ShadowEstimator(TARGETS, method="matched")

    def uniform_done(batch: qsense.ShadowBatch) -> bool:
        uniform.update(batch)
        return bool(np.all(uniform.estimate().stderr <= args.eps))

    T_uniform = asyncio.run(until_converged(driver(None, args.seed + 2), uniform_done))
    worst = max(worst, report("uniform random bases", T_uniform, uniform.estimate(), exact))

    h = held.estimate()
    h_exact = sims.exact_expval(psi, [HELD_OUT])[0]
    print(f"held-out <{HELD_OUT}> from the derandomized stream: {h.values[0]:+.4f} +- {h.stderr[0]:.4f}"
          f"   exact {h_exact:+.4f}")
    print(f"snapshots uniform / derandomized: {T_uniform / T_online:.1f}x")
    print(f"largest deviation: {worst:.2f} sigma")


if __name__ == "__main__":
    main()
