"""Your own acquisition chain in a dozen lines: copies → memory → scheduler → backend → daemon.

A noisy 3-qubit GHZ source emits copies (a Poisson stream, event time); a
simulated quantum memory (dephasing time T2) holds them; the scheduler pairs
half of them for two-copy Bell measurements and measures the rest as classical
shadows; the records go over ZeroMQ (127.0.0.1) into an in-process estimation
daemon.  The script prints the daemon's estimates next to the exact values
from the density matrix, and the chain's bookkeeping (every record sent was
folded).  Nothing to start beforehand: no broker, no daemon.

    python examples/acquisition_chain.py
    python examples/acquisition_chain.py --copies 40000 --pair-fraction 0.8 --t2 0.01

It uses :class:`qsense.apps.chain.Chain`, the builder ``qsense demo`` runs on;
swap the plugin names (``qsense.plugins.available("backend")``) or pass your
own driver, memory or backend objects to run the same chain on other sources.
"""

from __future__ import annotations

import argparse
import asyncio

import numpy as np

from qsense import sims
from qsense.acquisition.memory import ManualClock
from qsense.acquisition.pipeline import poisson_copies
from qsense.apps.chain import Chain

SHADOW = ["ZZI", "IZZ", "XXX", "YYX"]
BELL = ["XXX", "ZZI", "ZZZ"]


def noisy_ghz(n: int, p: float) -> np.ndarray:
    """(1 - p) |GHZ><GHZ| + p I / 2^n."""
    psi = sims.ghz_state(n)
    return (1 - p) * np.outer(psi, psi.conj()) + p * np.eye(2**n) / 2**n


def exact(rho: np.ndarray, label: str) -> float:
    """tr(P rho) for a dense Pauli label (leftmost letter on wire 0)."""
    mats = {"I": np.eye(2), "X": np.array([[0, 1], [1, 0]]), "Y": np.array([[0, -1j], [1j, 0]]), "Z": np.diag([1, -1])}
    op = np.array([[1.0]])
    for ch in label:
        op = np.kron(op, mats[ch])
    return float(np.real(np.trace(op @ rho)))


async def main(args: argparse.Namespace) -> int:
    rho = noisy_ghz(3, args.noise)
    config = {
        "daemon": {"name": "example", "publish_interval": 0.2},
        "estimators": [
            {"name": "paulis", "type": "shadow", "observables": SHADOW, "wires": 3},
            {"name": "squares", "type": "bell", "observables": BELL, "wires": 3, "t2": args.t2},
        ],
    }
    chain = (
        Chain(name="ghz", clock=ManualClock())
        .driver(poisson_copies(rho, args.rate, args.copies, seed=args.seed))
        .memory("simulated", capacity=4, t2=args.t2)
        .scheduler("fixed", ratio=args.pair_fraction)
        .backend("simulated", seed=args.seed + 1)
        .daemon(config, resume=False)
    )
    result = await chain.run()

    print(f"{'estimate':<16}{'daemon':>10}{'± 1σ':>9}{'exact':>10}{'pull':>8}")
    worst = 0.0
    for name, labels, power in (("paulis", SHADOW, 1), ("squares", BELL, 2)):
        body = result.estimates[name]
        for lab in labels:
            e = body["estimates"][lab]
            truth = exact(rho, lab) ** power
            pull = (e["value"] - truth) / e["stderr"] if e["stderr"] > 0 else 0.0
            worst = max(worst, abs(pull))
            what = f"<{lab}>" if power == 1 else f"<{lab}>^2"
            print(f"{what:<16}{e['value']:>10.4f}{e['stderr']:>9.4f}{truth:>10.4f}{pull:>8.2f}")
    print(f"records sent {sum(result.sent.values())}, folded by the daemon {sum(result.folded.values())}, "
          f"copies arrived {result.report.counters['arrived']}, unaccounted {result.report.unaccounted}")
    print(f"largest |pull|: {worst:.2f}")
    return 0 if result.ok else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--copies", type=int, default=20_000, help="copies emitted by the source (default 20000)")
    p.add_argument("--rate", type=float, default=1e4, help="copies per second, event time (default 1e4)")
    p.add_argument("--pair-fraction", type=float, default=0.5, help="fraction of copies paired for Bell (default 0.5)")
    p.add_argument("--t2", type=float, default=0.05, help="memory dephasing time T2, s (default 0.05)")
    p.add_argument("--noise", type=float, default=0.1, help="white-noise fraction of the GHZ state (default 0.1)")
    p.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    return p.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(parse_args())))
