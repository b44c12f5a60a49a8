"""Run the estimation daemon in-process from a TOML file and feed it over ZeroMQ.

A noisy 4-qubit GHZ source is sampled (single-copy shadows and two-copy Bell
shots), the batches go through a reliable ZeroMQ RecordPublisher into the daemon configured
by ``daemon_config.toml``, and a subscriber that joins late gets the current
estimates from the snapshot port, then follows live updates.  At the end it
prints exact values next to the daemon's estimates.

    python examples/daemon_with_config.py                       # the ports in the TOML
    python examples/daemon_with_config.py --any-port --seconds 2 --state-dir /tmp/q

The same configuration runs standalone with ``qsense daemon --config
examples/daemon_config.toml``; this script shows the in-process API
(:class:`qsense.streaming.daemon.EstimationDaemon`) that ``qsense demo`` uses.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from qsense import sims
from qsense.pauli import parse_observable
from qsense.streaming.config import load_config
from qsense.streaming.daemon import EstimationDaemon
from qsense.streaming.transport import EstimateSubscriber, RecordPublisher

HERE = Path(__file__).resolve().parent


def noisy_ghz(n: int = 4, p: float = 0.1) -> np.ndarray:
    """(1 - p) |GHZ><GHZ| + p I / 2^n."""
    psi = sims.ghz_state(n)
    return (1 - p) * np.outer(psi, psi.conj()) + p * np.eye(2**n) / 2**n


def exact_pauli(rho: np.ndarray, label: str, n: int) -> float:
    """tr(P rho) for a sparse or dense Pauli string, from the full Pauli vector."""
    ops = dict(parse_observable(label).terms[0][1].ops)
    index = 0
    for q in range(n):
        index = 4 * index + "IXYZ".index(ops.get(q, "I"))
    return float(sims.pauli_vector(rho)[index])


def with_free_ports(cfg, state_dir: Path | None):
    """Same configuration on free ports (to run beside another daemon, or in tests)."""
    inputs = tuple(dataclasses.replace(z, endpoint="tcp://127.0.0.1:*") for z in cfg.zmq_inputs)
    out = cfg.zmq_output and dataclasses.replace(cfg.zmq_output, endpoint="tcp://127.0.0.1:*",
                                                 snapshot_endpoint="tcp://127.0.0.1:*")
    prom = cfg.prometheus and dataclasses.replace(cfg.prometheus, port=0)
    return dataclasses.replace(cfg, zmq_inputs=inputs, zmq_output=out, prometheus=prom)


async def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if args.any_port:
        cfg = with_free_ports(cfg, None)
    if args.state_dir and cfg.checkpoint:
        cfg = dataclasses.replace(cfg, checkpoint=dataclasses.replace(cfg.checkpoint, path=Path(args.state_dir) / "lab1.ckpt"))
    cfg = dataclasses.replace(cfg, publish_interval=min(cfg.publish_interval, 0.25))
    rho = noisy_ghz()
    rng = np.random.default_rng(args.seed)

    async with EstimationDaemon(cfg, resume=False) as daemon:
        print("daemon endpoints:", daemon.endpoints)
        shadows = RecordPublisher(daemon.endpoints["input.records"], source="ghz-shadows")
        pairs = RecordPublisher(daemon.endpoints["input.records"], source="ghz-pairs")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + args.seconds
        while loop.time() < deadline:
            await shadows.send(sims.sample_shadows(rho, 2000, rng))
            await pairs.send(sims.sample_bell(rho, 500, rng))
            await asyncio.sleep(0.01)
        await asyncio.sleep(2 * cfg.publish_interval)  # let the last batches be published

        prefix = cfg.zmq_output.topic_prefix
        sub = EstimateSubscriber(daemon.endpoints["estimates"], daemon.endpoints["snapshot"], [f"{prefix}/"])
        state = await sub.snapshot(timeout=5)  # late joiner: the current state at once
        topic, live = await sub.recv(timeout=5)  # then live updates
        print(f"live update on {topic}: count={live.get('count', '-')}")
        sub.close()
        shadows.close()
        pairs.close()

    ghz = state[f"{prefix}/estimates/ghz"]
    print(f"\nshadow estimates from {ghz['count']} snapshots (noisy GHZ, p = 0.1)")
    print(f"{'observable':>14} {'exact':>8} {'estimate':>9} {'stderr':>8}")
    for label, e in ghz["estimates"].items():
        print(f"{label:>14} {exact_pauli(rho, label, 4):8.4f} {e['value']:9.4f} {e['stderr']:8.4f}")
    pairs_body = state[f"{prefix}/estimates/pairs"]
    print(f"\nBell estimates from {pairs_body['count']} two-copy shots")
    for label, e in pairs_body["estimates"].items():
        exact = sims.purity(rho) if label == "purity" else None
        if label in ("XXXX", "ZZII"):
            exact = exact_pauli(rho, label, 4) ** 2
        shown = f"{exact:8.4f}" if exact is not None else f"{'':8}"
        print(f"{label:>14} {shown} {e['value']:9.4f} {e['stderr']:8.4f}")
    ent = state[f"{prefix}/estimates/entropy"]["estimates"]
    print("\nsubsystem purities / Renyi-2 entropies:", {k: round(v["value"], 4) for k, v in ent.items()})
    status = state[f"{prefix}/status"]
    print("\ncounters:", status["totals"])
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(HERE / "daemon_config.toml"))
    ap.add_argument("--seconds", type=float, default=3.0, help="how long to stream")
    ap.add_argument("--any-port", action="store_true", help="bind free ports instead of the configured ones")
    ap.add_argument("--state-dir", default=os.path.join(tempfile.gettempdir(), "qsense-examples"),
                    help="where to put the checkpoint (default: a qsense-examples folder in the system temp dir)")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    raise SystemExit(asyncio.run(main(args)))
