"""What the daemon's hardening costs: its end-to-end rate before and after, in one run.

Issue 12's fixes (supervised inputs, bounded sequence jumps, source and peer
limits, the byte budget, the socket monitors, validated checkpoints, config
bounds) must cost at most 5% of the daemon's end-to-end rate.  This script
checks out the tree *before* them (``--before``, default the commit before the
first fix) next to the working tree, and runs the saturated daemon
measurement of ``benchmarks/bench_daemon.py`` (a sender process pushing
n = 16 snapshot batches over ZeroMQ into an ``EstimationDaemon`` with 1,000
observables, estimates published, checkpoints every 2 s) from each tree in
turn, alternating ``--rounds`` times so that a change of machine load hits
both alike.  It prints snapshots/s and snapshots per CPU-second of the daemon
process (the steadier figure on a shared machine) for each, and the ratios::

    python benchmarks/bench_hardening.py                 # 3 rounds of 8 s each
    python benchmarks/bench_hardening.py --rounds 5 --seconds 6 --before 7ea627d^

Each tree runs with its own code: its ``qsense/`` is staged with ``sims/`` and
``drivers/`` linked in as ``qsense.sims`` / ``qsense.drivers`` (the installed
layout), on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: run inside each tree: the saturated measurement of that tree's own bench_daemon.py
SNIPPET = r"""
import asyncio, json, sys, argparse
import numpy as np
sys.path.insert(0, sys.argv[1])
import bench_daemon as bd
from qsense.estimators import kernels
a = argparse.Namespace(n=16, observables=1000, weight=(2, 2), groups=1, batch=65536, seconds=float(sys.argv[2]),
                       repeat=1, transport="tcp", kernel_threads=1, publish_interval=0.1, paced_fraction=0.5,
                       no_profile=True, quick=False, only=None, wire=2, json=None)
kernels.set_threads(1)
words = bd.random_paulis(np.random.default_rng(0), a.n, a.observables, *a.weight)
r = asyncio.run(bd._run_daemon(a, words, "tcp://127.0.0.1:*", a.seconds, 0.0, False))
print("RESULT " + json.dumps({k: r[k] for k in ("snapshots_per_s", "snapshots_per_cpu_s", "received", "malformed")}))
"""


def stage(tree: Path, into: Path, overlay: tuple[Path, list[str]] | None = None) -> Path:
    """``tree`` laid out as it installs: qsense/ with sims/ and drivers/ inside; ``overlay``: (tree, paths
    under qsense/) copied over it, e.g. the current estimators into the old tree, so that only the rest differs."""
    pkg = into / "qsense"
    shutil.copytree(tree / "qsense", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    for sub in ("sims", "drivers"):
        shutil.copytree(tree / sub, pkg / sub, ignore=shutil.ignore_patterns("__pycache__"))
    if overlay is not None:
        src, paths = overlay
        for rel in paths:
            shutil.rmtree(pkg / rel, ignore_errors=True)
            shutil.copytree(src / "qsense" / rel, pkg / rel, ignore=shutil.ignore_patterns("__pycache__"))
    return into


def run_one(tree: Path, staged: Path, seconds: float) -> dict:
    env = {**os.environ, "PYTHONPATH": str(staged)}
    out = subprocess.run([sys.executable, "-c", SNIPPET, str(tree / "benchmarks"), str(seconds)], cwd=staged, env=env,
                         capture_output=True, text=True, timeout=600)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{tree}: no result\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default="7ea627d^", help="the commit before the hardening (default: before issue 12's first fix)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--overlay", nargs="*", default=["estimators"], metavar="DIR",
                    help="folders under qsense/ taken from the working tree into the 'before' tree too (default: "
                         "estimators, so that faster kernels do not hide the hardening's cost); none: --overlay")
    args = ap.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="qsense-hardening-"))
    try:
        before_tree = scratch / "before-tree"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(before_tree), args.before],
                       check=True, capture_output=True)
        overlay = (REPO, list(args.overlay)) if args.overlay else None
        trees = {"before": (before_tree, stage(before_tree, scratch / "before", overlay)),
                 "after": (REPO, stage(REPO, scratch / "after"))}
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", args.before], capture_output=True, text=True).stdout.strip()
        print(f"daemon end to end, saturated, n=16, 1,000 observables, batches of 65,536, tcp; before = {rev}, after = working tree; "
              f"{args.rounds} rounds of {args.seconds:.0f} s; 'before' with the working tree's "
              f"{', '.join('qsense/' + p for p in args.overlay) or 'nothing'}; load average {os.getloadavg()[0]:.2f}")
        got: dict[str, list[dict]] = {"before": [], "after": []}
        for i in range(args.rounds):
            for name in (("before", "after") if i % 2 == 0 else ("after", "before")):
                r = run_one(*trees[name], args.seconds)
                got[name].append(r)
                print(f"  round {i + 1} {name:6s} {r['snapshots_per_s'] / 1e6:6.2f} M snapshots/s, "
                      f"{r['snapshots_per_cpu_s'] / 1e6:6.2f} M per daemon CPU-second (folded {r['received']}, malformed {r['malformed']})")
        med = {k: {m: statistics.median(x[m] for x in v) for m in ("snapshots_per_s", "snapshots_per_cpu_s")} for k, v in got.items()}
        for m, label in (("snapshots_per_s", "rate"), ("snapshots_per_cpu_s", "per CPU-second")):
            ratio = med["after"][m] / med["before"][m]
            print(f"  median {label:15s} before {med['before'][m] / 1e6:6.2f} M, after {med['after'][m] / 1e6:6.2f} M: "
                  f"after/before = {ratio:.3f} ({100 * (1 - ratio):+.1f}% cost)")
        print(f"  load average after {os.getloadavg()[0]:.2f}")
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(scratch / "before-tree")], capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
