"""Stream classical shadows and two-copy Bell shots of a PennyLane GHZ circuit.

A phase-sensing GHZ probe: H, a CNOT ladder, then RZ(phi) on every qubit, so
<X...X> = cos(n phi) and <Y X...X> = sin(n phi).  Halfway through the stream the
phase is changed with ``driver.set_params`` and the online estimators are
restarted, as a sensing application tracking a signal would.

    python examples/pennylane_ghz_shadows.py                  # state mode, default.qubit
    python examples/pennylane_ghz_shadows.py --mode device    # the device measures
    python examples/pennylane_ghz_shadows.py --device lightning.qubit --mode device

Prints, per phase, the estimated and exact values of a few Pauli expectations
(shadows), squared expectations and purity (two-copy Bell shots), with one-sigma
error bars.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math

import numpy as np
import pennylane as qml

import qsense
from qsense import sims
from qsense.drivers.pennylane_device import PennyLaneDriver


def ghz_probe(phi: float, n: int) -> None:
    """GHZ state with phase n*phi: H, CNOT ladder, RZ(phi) on every wire."""
    qml.Hadamard(0)
    for i in range(n - 1):
        qml.CNOT([i, i + 1])
    for i in range(n):
        qml.RZ(phi, i)


async def stream_phase(args: argparse.Namespace, phis: list[float]) -> list[dict]:
    n = args.n
    labels = ["X" * n, "Y" + "X" * (n - 1), "Z" * 2 + "I" * (n - 2)]
    per_phase = args.shots
    results = []

    def make_device(wires: int):
        return qml.device(args.device, wires=wires, seed=args.seed)

    # endless streams; each phase pulls exactly per_phase records from both
    shadow = PennyLaneDriver(
        ghz_probe, make_device(n), kind="shadow", mode=args.mode, params={"phi": phis[0], "n": n},
        batch_size=args.batch, seed=args.seed, source="ghz-shadow",
    )
    bell = PennyLaneDriver(
        ghz_probe, make_device(2 * n), kind="bell", mode=args.mode, params={"phi": phis[0], "n": n},
        batch_size=args.batch, seed=args.seed + 1, source="ghz-bell",
    )
    for phi in phis:
        shadow.set_params(phi=phi, n=n)
        bell.set_params(phi=phi, n=n)
        est = qsense.ShadowEstimator(labels, groups=10)
        best = qsense.BellEstimator(labels)
        for driver, sink in ((shadow, est), (bell, best)):
            need = per_phase
            async with contextlib.aclosing(driver.stream()) as batches:
                async for batch in batches:
                    sink.update(batch[:need])
                    need -= min(need, batch.T)
                    if need == 0:
                        break
        rho = sims.to_density_matrix(sims.ghz_state(n, n * phi))
        exact = sims.pauli_vector(rho)
        all_labels = qsense.pauli_square_labels(n)
        ex = np.array([exact[all_labels.index(lab)] for lab in labels])
        results.append({"phi": phi, "labels": labels, "shadow": est.estimate(), "bell": best.estimate(),
                        "purity": best.purity(), "exact": ex})
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4, help="qubits (default 4)")
    ap.add_argument("--shots", type=int, default=20_000, help="records per phase and family (default 20000)")
    ap.add_argument("--batch", type=int, default=5_000, help="records per batch (default 5000)")
    ap.add_argument("--mode", choices=["state", "device"], default="state")
    ap.add_argument("--device", default="default.qubit", help="PennyLane device name (default default.qubit)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--phases", type=float, nargs="+", default=[0.1, 0.35], help="phases phi (radians)")
    ap.add_argument("-v", "--verbose", action="store_true", help="log driver events")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.n < 2:
        ap.error("--n must be at least 2")

    results = asyncio.run(stream_phase(args, args.phases))
    print(f"GHZ phase probe, n={args.n}, {args.device}, {args.mode} mode, {args.shots} records per phase and family")
    worst = 0.0
    for r in results:
        print(f"\nphi = {r['phi']:.4f}  (n*phi = {args.n * r['phi']:.4f})")
        print(f"  {'observable':<12} {'shadow est.':>20} {'exact':>9}   {'Bell est. of <P>^2':>22} {'exact':>9}")
        s, b = r["shadow"], r["bell"]
        for i, lab in enumerate(r["labels"]):
            ex = r["exact"][i]
            print(f"  {lab:<12} {s.values[i]:>10.4f} ± {s.stderr[i]:<7.4f} {ex:>9.4f}   "
                  f"{b.values[i]:>12.4f} ± {b.stderr[i]:<7.4f} {ex * ex:>9.4f}")
            worst = max(worst, abs(s.values[i] - ex) / max(s.stderr[i], 1e-12), abs(b.values[i] - ex * ex) / max(b.stderr[i], 1e-12))
        p = r["purity"]
        print(f"  {'purity':<12} {'':>20} {'':>9}   {p.values[0]:>12.4f} ± {p.stderr[0]:<7.4f} {1.0:>9.4f}")
        est_phase = math.atan2(s.values[1], s.values[0]) / args.n
        print(f"  phase from shadows: {est_phase:.4f} rad (true {r['phi']:.4f})")
    print(f"\nlargest deviation: {worst:.2f} sigma")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
