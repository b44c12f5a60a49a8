"""Estimate Pauli expectation values and subsystem entropies from a recorded file.

Reads Huang-Kueng-Preskill text files (``measurement.txt``, ``observables.txt``,
``subsystems.txt``) or an ``.npz`` holding ``bases`` and ``outcomes`` arrays
(PennyLane's recipes and bits), and prints one line per target:
``label  value  stderr``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from qsense.estimators.purity import ShadowPurity
from qsense.estimators.shadow import METHODS, ShadowEstimator
from qsense.records import ShadowBatch
from qsense.streaming import reference

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``qsense estimate``."""
    p.add_argument("measurements", type=Path, help="measurement file (reference text format) or .npz with bases/outcomes")
    p.add_argument("-o", "--observable", action="append", default=[], metavar="PAULI",
                   help='Pauli string, dense "XIZ" or sparse "X0 Z2" (repeatable)')
    p.add_argument("--observables-file", type=Path, help="observables in the reference text format")
    p.add_argument("--subsystems-file", type=Path, help="subsystems in the reference text format (Renyi-2 entropies)")
    p.add_argument("-s", "--subsystem", action="append", default=[], metavar="Q1,Q2,...",
                   help="subsystem (comma-separated wire positions) for a Renyi-2 entropy (repeatable)")
    p.add_argument("--groups", type=int, default=1, help="median-of-means groups K (default 1: plain mean)")
    p.add_argument("--method", choices=METHODS, default="mean",
                   help="mean: 3^k-weighted snapshot estimator; matched: Huang's matched-ratio estimator")


def _load(path: Path) -> ShadowBatch:
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            missing = {"bases", "outcomes"} - set(z.files)
            if missing:
                raise ValueError(f"{path}: missing arrays {sorted(missing)}")
            return ShadowBatch(bases=z["bases"], outcomes=z["outcomes"])
    return reference.read_measurements(path)


def run(args: argparse.Namespace) -> int:
    """Run ``qsense estimate``: print one line per target."""
    batch = _load(args.measurements)
    log.info("read %d snapshots on %d qubits from %s", batch.T, batch.n, args.measurements)
    observables: list = list(args.observable)
    if args.observables_file:
        observables += reference.read_observables(args.observables_file)[1]
    subsystems = [tuple(int(q) for q in s.split(",")) for s in args.subsystem]
    if args.subsystems_file:
        subsystems += reference.read_subsystems(args.subsystems_file)[1]
    if not observables and not subsystems:
        raise SystemExit("nothing to estimate: give --observable/--observables-file or --subsystem/--subsystems-file")
    if observables:
        est = ShadowEstimator(observables, groups=args.groups, method=args.method)
        est.update(batch)
        r = est.estimate()
        print(f"{'observable':<24} {'value':>12} {'stderr':>10}")
        for lab, v, s in zip(r.labels, r.values, r.stderr):
            print(f"{lab:<24} {v:>12.6f} {s:>10.6f}")
    if subsystems:
        p = ShadowPurity(subsystems)
        p.update(batch)
        pur, ent = p.purity(), p.entropy()
        print(f"{'subsystem':<24} {'purity':>12} {'stderr':>10} {'S2 (bits)':>10} {'stderr':>10}")
        for lab, v, s, e, es in zip(pur.labels, pur.values, pur.stderr, ent.values, ent.stderr):
            print(f"{lab:<24} {v:>12.6f} {s:>10.6f} {e:>10.6f} {es:>10.6f}")
    return 0
